/** Summaries of latency samples for the benchmark reports. */
import { quantile } from './probe.ts';

export interface LatencySummary {
  readonly count: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

/** p50, p99 (nearest rank) and max of `values`; undefined when there are none. */
export function summariseLatencies(values: readonly number[]): LatencySummary | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return {
    count: sorted.length,
    p50: quantile(sorted, 0.5)!,
    p99: quantile(sorted, 0.99)!,
    max: sorted[sorted.length - 1]!,
  };
}

/** `a - b`, or undefined when either is missing (a latency added over a reference). */
export function added(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined ? undefined : a - b;
}
