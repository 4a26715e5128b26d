/**
 * Process and runtime metrics: prom-client's default collectors, without the ones Prometheus's
 * rules refuse, and event-loop delay as a histogram.
 *
 * Left out: `nodejs_active_{handles,requests,resources}_total`, gauges named like counters
 * (`promtool check metrics` flags them; `sum` of the per-type gauge of the same name without
 * `_total` gives the same number), and prom-client's `nodejs_eventloop_lag_*` gauges: quantiles
 * computed in the process over one scrape interval, which no query can aggregate across instances
 * or over time. `nodejs_eventloop_delay_seconds` replaces them: a histogram of the same samples
 * (perf_hooks.monitorEventLoopDelay, every `telemetry.metrics.eventLoopResolution`), whose buckets
 * sum across instances and turn into any quantile over any window with histogram_quantile.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { collectDefaultMetrics, type Registry, type RegistryContentType } from 'prom-client';
import { CellHistogram, type HistogramCell } from './metric-cells.ts';

/**
 * Default sampling interval of the event-loop monitor. Each tick wakes an idle process (about
 * 45 µs of CPU each on a VM): at prom-client's 10 ms that was 0.45% of a core doing nothing, most
 * of an idle gateway's cost. At 50 ms a stall longer than the interval is still always seen, a
 * shorter one with a chance of its length over the interval (docs/decisions.md).
 */
export const EVENT_LOOP_RESOLUTION_MS = 50;

/** Seconds of delay: 1 ms (timer granularity) to 5 s (a loop that stalled). */
export const EVENT_LOOP_DELAY_BUCKETS: readonly number[] = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
];

/** prom-client default metrics that are not exported (see above); names without the prefix. */
const LEFT_OUT = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
  'nodejs_eventloop_lag_seconds',
  'nodejs_eventloop_lag_min_seconds',
  'nodejs_eventloop_lag_max_seconds',
  'nodejs_eventloop_lag_mean_seconds',
  'nodejs_eventloop_lag_stddev_seconds',
  'nodejs_eventloop_lag_p50_seconds',
  'nodejs_eventloop_lag_p90_seconds',
  'nodejs_eventloop_lag_p99_seconds',
] as const;

/**
 * prom-client's own event-loop monitor cannot be turned off; with this interval (the longest a
 * timer takes, about 24.8 days) it never samples, so only ours runs.
 */
const IDLE_MONITOR_MS = 2 ** 31 - 1;

/** The part of an IntervalHistogram (or a RecordableHistogram, in tests) a fold reads. */
export interface DelaySamples {
  readonly count: number;
  readonly mean: number;
  percentile(percentile: number): number;
  reset(): void;
}

/**
 * How many of `samples` are at most `ns`: the largest k whose k-th smallest sample (the histogram's
 * value at percentile k/count) is ≤ `ns`, by binary search (about log2(count) lookups).
 */
export function countAtMost(samples: DelaySamples, ns: number): number {
  const n = samples.count;
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (samples.percentile((mid / n) * 100) <= ns) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * Move the samples gathered since the last fold into `cell` (per-bucket counts, the last slot
 * +Inf), as delays: each sample is the time between two ticks of the monitor, so the tick
 * interval (`offsetNs`) is taken off (a tick that came early counts as no delay). Resets
 * `samples`.
 */
export function foldDelays(
  samples: DelaySamples,
  bounds: readonly number[],
  offsetNs: number,
  cell: HistogramCell,
): void {
  const n = samples.count;
  if (n === 0) return;
  let below = 0;
  for (let i = 0; i < bounds.length; i++) {
    const atMost = countAtMost(samples, bounds[i]! * 1e9 + offsetNs);
    cell.counts[i]! += atMost - below;
    below = atMost;
  }
  cell.counts[bounds.length]! += n - below;
  cell.sum += (Math.max(0, samples.mean - offsetNs) * n) / 1e9;
  cell.count += n;
  samples.reset();
}

/** A histogram read from the event-loop monitor at every scrape. */
class EventLoopDelayHistogram extends CellHistogram {
  readonly #monitor: ReturnType<typeof monitorEventLoopDelay>;
  readonly #cell: HistogramCell;

  readonly #offsetNs: number;

  constructor(name: string, registry: Registry<RegistryContentType>, resolutionMs: number) {
    super({
      name,
      help: `Event-loop delay: how late the event loop ran a timer due every ${resolutionMs} ms.`,
      labelNames: [],
      buckets: EVENT_LOOP_DELAY_BUCKETS,
      exemplars: false,
      registry,
    });
    this.#cell = this.cell({});
    this.#offsetNs = resolutionMs * 1e6;
    this.#monitor = monitorEventLoopDelay({ resolution: resolutionMs });
    this.#monitor.enable();
  }

  #fold(): void {
    foldDelays(this.#monitor, EVENT_LOOP_DELAY_BUCKETS, this.#offsetNs, this.#cell);
  }

  override *render(openMetrics: boolean): Generator<string, void, void> {
    this.#fold();
    yield* super.render(openMetrics);
  }

  override getForPromString(): ReturnType<CellHistogram['getForPromString']> {
    this.#fold();
    return super.getForPromString();
  }

  close(): void {
    this.#monitor.disable();
  }
}

/**
 * Register the process and runtime metrics in `registry` under `prefix`, the event-loop monitor
 * sampling every `resolutionMs`. The returned function stops the monitor.
 */
export function registerRuntimeMetrics(
  registry: Registry<RegistryContentType>,
  prefix: string,
  resolutionMs: number = EVENT_LOOP_RESOLUTION_MS,
): () => void {
  collectDefaultMetrics({
    register: registry as Registry,
    prefix,
    eventLoopMonitoringPrecision: IDLE_MONITOR_MS,
  });
  for (const name of LEFT_OUT) registry.removeSingleMetric(prefix + name);
  const delay = new EventLoopDelayHistogram(
    `${prefix}nodejs_eventloop_delay_seconds`,
    registry,
    resolutionMs,
  );
  return () => delay.close();
}
