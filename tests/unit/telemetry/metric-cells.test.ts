/**
 * CellMetric and CellHistogram stand in for prom-client's Counter, Gauge and Histogram inside a
 * prom-client Registry; whatever they render must be exactly what prom-client renders.
 */
import { Counter, Gauge, Histogram, Registry, type RegistryContentType } from 'prom-client';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CellHistogram, CellMetric } from '../../../src/telemetry/metric-cells.ts';

const BUCKETS = [0.001, 0.01, 0.1, 1];
const FORMATS = [Registry.PROMETHEUS_CONTENT_TYPE, Registry.OPENMETRICS_CONTENT_TYPE] as const;

function registry(format: RegistryContentType): Registry<RegistryContentType> {
  const r = new Registry<RegistryContentType>();
  r.setContentType(format);
  return r;
}

afterEach(() => {
  vi.useRealTimers();
});

describe('CellMetric / CellHistogram render like prom-client', () => {
  it.each(FORMATS)('counters and gauges (%s)', async (format) => {
    const ref = registry(format);
    const refCounter = new Counter({
      name: 'x_total',
      help: 'h',
      labelNames: ['a', 'b'],
      registers: [ref as Registry],
    });
    const refGauge = new Gauge({ name: 'g', help: 'h', labelNames: ['a'], registers: [ref as Registry] });
    refCounter.inc({ a: '1', b: 'x"y' }, 3);
    refCounter.inc({ a: '2', b: 'z' }, 0.5);
    refGauge.inc({ a: 'q' }, 2);
    refGauge.dec({ a: 'q' }, 1);

    const ours = registry(format);
    const counter = new CellMetric('counter', {
      name: 'x_total',
      help: 'h',
      labelNames: ['a', 'b'],
      registry: ours,
    });
    const gauge = new CellMetric('gauge', { name: 'g', help: 'h', labelNames: ['a'], registry: ours });
    counter.cell({ a: '1', b: 'x"y' }).value += 3;
    counter.cell({ a: '2', b: 'z' }).value += 0.5;
    const g = gauge.cell({ a: 'q' });
    g.value += 2;
    g.value -= 1;

    expect(await ours.metrics()).toBe(await ref.metrics());
  });

  it.each(FORMATS)('histograms with exemplars (%s)', async (format) => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2025-01-02T03:04:05.678Z'));
    const values: [string, number, string | undefined][] = [
      ['a', 0.0005, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'],
      ['a', 0.05, undefined],
      ['a', 0.05, 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'],
      ['b', 7, 'cccccccccccccccccccccccccccccccc'],
      ['b', 1, undefined],
    ];

    const ref = registry(Registry.OPENMETRICS_CONTENT_TYPE);
    // <string>: prom-client types exemplarLabels as the metric's own label names.
    const refHist = new Histogram<string>({
      name: 'd_seconds',
      help: 'h',
      labelNames: ['route'],
      buckets: BUCKETS,
      enableExemplars: true,
      registers: [ref as Registry<typeof Registry.OPENMETRICS_CONTENT_TYPE>],
    });
    ref.setContentType(format);
    const ours = registry(format);
    const hist = new CellHistogram({
      name: 'd_seconds',
      help: 'h',
      labelNames: ['route'],
      buckets: BUCKETS,
      exemplars: true,
      registry: ours,
    });
    const cells = new Map<string, ReturnType<CellHistogram['cell']>>();
    for (const [route, value, traceId] of values) {
      if (traceId === undefined) refHist.observe({ labels: { route }, value });
      else refHist.observe({ labels: { route }, value, exemplarLabels: { trace_id: traceId } });
      let cell = cells.get(route);
      if (cell === undefined) {
        cell = hist.cell({ route });
        cells.set(route, cell);
      }
      hist.observe(cell, value, traceId);
    }

    const expected = await ref.metrics();
    expect(await ours.metrics()).toBe(expected);
    if (format === Registry.OPENMETRICS_CONTENT_TYPE) {
      expect(expected).toContain(
        'd_seconds_bucket{le="+Inf",route="b"} 2 # {trace_id="cccccccccccccccccccccccccccccccc"} 7',
      );
    }
    // prom-client leaves the +Inf bucket's missing exemplar undefined and the others null.
    const json = async (r: Registry<RegistryContentType>) =>
      JSON.parse(
        JSON.stringify(await r.getMetricsAsJSON(), (k, v) =>
          k === 'exemplar' && v === null ? undefined : v,
        ),
      );
    expect(await json(ours)).toEqual(await json(ref));
  });

  it('drops NaN and negative observations instead of throwing on the hot path', async () => {
    const r = registry(Registry.PROMETHEUS_CONTENT_TYPE);
    const hist = new CellHistogram({
      name: 'h',
      help: 'h',
      labelNames: [],
      buckets: BUCKETS,
      exemplars: false,
      registry: r,
    });
    const cell = hist.cell({});
    hist.observe(cell, Number.NaN, undefined);
    hist.observe(cell, -1, undefined);
    hist.observe(cell, 0.5, undefined);
    expect(cell.count).toBe(1);
    expect(await r.metrics()).toContain('h_bucket{le="1"} 1');
  });

  it('rejects a label set that does not match the declared names', () => {
    const r = registry(Registry.PROMETHEUS_CONTENT_TYPE);
    const c = new CellMetric('counter', { name: 'c_total', help: 'h', labelNames: ['a'], registry: r });
    expect(() => c.cell({ b: '1' })).toThrow(/do not match/);
    expect(() => c.cell({ a: '1', b: '2' })).toThrow(/do not match/);
  });

  it('reset() zeroes the series', async () => {
    const r = registry(Registry.PROMETHEUS_CONTENT_TYPE);
    const c = new CellMetric('counter', { name: 'c_total', help: 'h', labelNames: ['a'], registry: r });
    c.cell({ a: '1' }).value = 5;
    r.resetMetrics();
    expect(await r.metrics()).toContain('c_total{a="1"} 0');
  });
});
