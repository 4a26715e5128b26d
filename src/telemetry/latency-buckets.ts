/**
 * The default buckets of both latency histograms, in a module of its own so the config schema
 * (telemetry.metrics.latencyBuckets) can use it without importing metrics.ts, which imports the
 * schema.
 */

/**
 * The bucket boundaries the OpenTelemetry HTTP semantic conventions recommend for
 * `http.server.request.duration` and `http.client.request.duration` (seconds).
 */
export const OTEL_HTTP_DURATION_BUCKETS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
];

/**
 * Seconds. Every OpenTelemetry boundary (so Peregrine's histograms sum `by (le)` with those of
 * OpenTelemetry-instrumented services, through deployment/prometheus/peregrine-otel-rules.yml),
 * plus 1 ms and 2.5 ms below them, where a gateway's own latency lives, and 30 s, the default
 * request timeout. Cost and choice: docs/decisions.md, "Latency buckets".
 */
export const LATENCY_BUCKETS: readonly number[] = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30,
];
