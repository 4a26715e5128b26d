/**
 * The default buckets of both latency histograms, in a module of its own so the config schema
 * (telemetry.metrics.latencyBuckets) can use it without importing metrics.ts, which imports the
 * schema.
 */

/** Seconds. Dense below 100 ms where a gateway's own latency lives; 30 s is the default request timeout. */
export const LATENCY_BUCKETS: readonly number[] = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];
