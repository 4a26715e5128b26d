import { createHistogram } from 'node:perf_hooks';
import { Registry, type RegistryContentType } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { TelemetrySchema } from '../../../src/config/schema.ts';
import { CellHistogram } from '../../../src/telemetry/metric-cells.ts';
import { createMetrics, renderMetrics } from '../../../src/telemetry/metrics.ts';
import {
  countAtMost,
  EVENT_LOOP_DELAY_BUCKETS,
  EVENT_LOOP_RESOLUTION_MS,
  foldDelays,
} from '../../../src/telemetry/runtime-metrics.ts';

const MS = 1e6;

/** A histogram holding `values` (ns), as the event-loop monitor holds its samples. */
function samplesOf(values: number[]) {
  const h = createHistogram();
  for (const v of values) h.record(v);
  return h;
}

function cellOf(buckets: readonly number[]) {
  const metric = new CellHistogram({
    name: 'delay_seconds',
    help: 'test',
    labelNames: [],
    buckets,
    exemplars: false,
    registry: new Registry<RegistryContentType>(),
  });
  return metric.cell({});
}

describe('event-loop delay folded into histogram buckets', () => {
  it('counts the samples at or below a value exactly, away from the histogram resolution', () => {
    const values = [10, 10.4, 10.9, 11, 12, 15, 22, 40, 250].map((v) => v * MS);
    const h = samplesOf(values);
    for (const [at, expected] of [
      [5 * MS, 0],
      [10.5 * MS, 2],
      [11.5 * MS, 4],
      [30 * MS, 7],
      [100 * MS, 8],
      [1000 * MS, 9],
    ] as const) {
      expect(countAtMost(h, at), `≤ ${at / MS} ms`).toBe(expected);
    }
    expect(countAtMost(samplesOf([]), 1)).toBe(0);
  });

  it('takes the tick interval off each sample, adds to the buckets and resets the samples', () => {
    // Ticks every 10 ms: delays 0 (one tick came early), 0.5, 3, 20, 300 ms and 7 s.
    const h = samplesOf([9.8, 10.5, 13, 30, 310, 7010].map((v) => v * MS));
    const cell = cellOf([0.001, 0.005, 0.025, 0.5, 5]);
    foldDelays(h, [0.001, 0.005, 0.025, 0.5, 5], 10 * MS, cell);
    expect([...cell.counts]).toEqual([2, 1, 1, 1, 0, 1]);
    expect(cell.count).toBe(6);
    // The sum of the delays (from the histogram's mean, so to its precision).
    expect(cell.sum).toBeCloseTo(0 + 0.0005 + 0.003 + 0.02 + 0.3 + 7 - 0.0002, 2);
    expect(h.count).toBe(0);
    // The next fold adds to what is there.
    h.record(12 * MS);
    foldDelays(h, [0.001, 0.005, 0.025, 0.5, 5], 10 * MS, cell);
    expect([...cell.counts]).toEqual([2, 2, 1, 1, 0, 1]);
    expect(cell.count).toBe(7);
    // Nothing new: nothing changes.
    foldDelays(h, [0.001, 0.005, 0.025, 0.5, 5], 10 * MS, cell);
    expect(cell.count).toBe(7);
  });

  it('is exported as a histogram that Prometheus can aggregate, sampled while the process runs', async () => {
    const m = createMetrics({ exemplars: false, version: 't', eventLoopResolutionMs: 10 });
    try {
      // Let the monitor tick, then hold the loop for 50 ms: it must see a late tick.
      await new Promise((resolve) => setTimeout(resolve, 30));
      const busy = Date.now();
      while (Date.now() - busy < 50) {
        // busy
      }
      await new Promise((resolve) => setTimeout(resolve, 60));
      const { body } = await renderMetrics(m, undefined);
      const count = Number(/^peregrine_nodejs_eventloop_delay_seconds_count (\d+)$/m.exec(body)?.[1]);
      expect(count).toBeGreaterThan(0);
      const buckets = [
        ...body.matchAll(/^peregrine_nodejs_eventloop_delay_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm),
      ];
      expect(buckets.map((b) => b[1])).toEqual([...EVENT_LOOP_DELAY_BUCKETS.map(String), '+Inf']);
      // Cumulative, ending at the count; the busy stretch shows as a delay of at least 25 ms.
      const counts = buckets.map((b) => Number(b[2]));
      expect(counts).toEqual([...counts].sort((a, b) => a - b));
      expect(counts.at(-1)).toBe(count);
      const below25ms = counts[EVENT_LOOP_DELAY_BUCKETS.indexOf(0.025)]!;
      expect(below25ms).toBeLessThan(count);
    } finally {
      m.close();
      m.close();
    }
  });

  it('samples every 50 ms by default, not every 10 ms: an idle process is woken 20 times a second', async () => {
    expect(EVENT_LOOP_RESOLUTION_MS).toBe(50);
    expect(TelemetrySchema.parse({}).metrics.eventLoopResolution).toBe(50);
    const sampleCount = async (m: ReturnType<typeof createMetrics>) => {
      const { body } = await renderMetrics(m, undefined);
      return Number(/^peregrine_nodejs_eventloop_delay_seconds_count (\d+)$/m.exec(body)?.[1]);
    };
    const m = createMetrics({ exemplars: false, version: 't' });
    try {
      // 400 ms: 7 ticks at 50 ms (the first opens the series), 39 at 10 ms; a loaded machine only
      // makes fewer.
      await sampleCount(m);
      await new Promise((resolve) => setTimeout(resolve, 400));
      const count = await sampleCount(m);
      expect(count).toBeGreaterThan(0);
      expect(count).toBeLessThanOrEqual(12);
    } finally {
      m.close();
    }
  });

  it('takes its interval from telemetry.metrics.eventLoopResolution, within 1 ms to 1 s', () => {
    expect(
      TelemetrySchema.parse({ metrics: { eventLoopResolution: '10ms' } }).metrics.eventLoopResolution,
    ).toBe(10);
    for (const bad of ['0ms', '2s'])
      expect(
        TelemetrySchema.safeParse({ metrics: { eventLoopResolution: bad } }).error?.issues[0],
      ).toMatchObject({
        path: ['metrics', 'eventLoopResolution'],
        message: 'between 1ms and 1s',
      });
  });
});
