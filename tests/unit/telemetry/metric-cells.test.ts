/**
 * CellMetric and CellHistogram stand in for prom-client's Counter, Gauge and Histogram inside a
 * prom-client Registry; whatever they render must be exactly what prom-client renders.
 */
import { Counter, Gauge, Histogram, Registry, type RegistryContentType } from 'prom-client';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { writeExposition } from '../../../src/telemetry/exposition.ts';
import { CellHistogram, CellMetric, type Labels, ReadGauge } from '../../../src/telemetry/metric-cells.ts';

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

  it.each(FORMATS)(
    'ReadGauge renders what a prom-client Gauge filled by collect() renders (%s)',
    async (format) => {
      // 300 sources of 3 series each, one of them absent for some sources, with odd names.
      const sources = new Map<string, { n: number }>();
      for (let i = 0; i < 300; i++) sources.set(i === 7 ? 'odd "name"\\\n' : `u${i}`, { n: i });
      const states = ['a', 'b', 'c'] as const;
      const read = (key: string, s: { n: number }, emit: (labels: Labels, value: number) => void): void => {
        for (const [k, state] of states.entries())
          if (k !== 2 || s.n % 4 === 0) emit({ upstream: key, state }, k === 1 ? s.n / 3 : s.n * k);
      };
      const ref = registry(format);
      new Gauge({
        name: 'g',
        help: 'h',
        labelNames: ['upstream', 'state'],
        registers: [ref as Registry],
        collect() {
          this.reset();
          for (const [key, s] of sources) read(key, s, (labels, value) => this.set(labels, value));
        },
      });
      const ours = registry(format);
      new ReadGauge({
        name: 'g',
        help: 'h',
        labelNames: ['upstream', 'state'],
        registry: ours,
        sources,
        read,
      });
      const expected = await ref.metrics();
      expect(expected).toContain('g{upstream="u8",state="c"} 16');
      expect(await ours.metrics()).toBe(expected);
      const chunks: string[] = [];
      await writeExposition(ours, format === Registry.OPENMETRICS_CONTENT_TYPE, (c) => {
        chunks.push(c);
      });
      expect(chunks.join('')).toBe(expected);
    },
  );

  it('a render writes the series that existed when it began, each once', () => {
    // A scrape spanning two reloads: a route's series removed after the render passed it and
    // created again before the render ended must not be written twice.
    const r = registry(Registry.PROMETHEUS_CONTENT_TYPE);
    const hist = new CellHistogram({
      name: 'h',
      help: 'h',
      labelNames: ['route'],
      buckets: BUCKETS,
      exemplars: false,
      registry: r,
    });
    const counter = new CellMetric('counter', {
      name: 'c_total',
      help: 'h',
      labelNames: ['route'],
      registry: r,
    });
    const hCells = Array.from({ length: 50 }, (_, i) => hist.cell({ route: `r${i}` }));
    const cCells = Array.from({ length: 500 }, (_, i) => counter.cell({ route: `r${i}` }));
    const renderSpanning = (render: Generator<string, void, void>, reload: () => void): string => {
      let text = '';
      let step = 0;
      for (const piece of render) {
        text += piece;
        if (++step === 2) reload();
      }
      return text;
    };
    const hText = renderSpanning(hist.render(false), () => {
      hist.remove(hCells[0]!);
      hist.observe(hist.cell({ route: 'r0' }), 0.5, undefined);
      hist.observe(hist.cell({ route: 'new' }), 0.5, undefined);
    });
    expect(hText.split('\n').filter((l) => l.startsWith('h_count{route="r0"}'))).toEqual([
      'h_count{route="r0"} 0',
    ]);
    expect(hText).not.toContain('route="new"');
    const cText = renderSpanning(counter.render(false), () => {
      counter.remove(cCells[0]!);
      counter.cell({ route: 'r0' }).value = 1;
    });
    expect(cText.split('\n').filter((l) => l.startsWith('c_total{route="r0"}'))).toEqual([
      'c_total{route="r0"} 0',
    ]);
    // The next render sees the new series.
    expect([...hist.render(false)].join('')).toContain('h_count{route="new"} 1');
  });

  it('reset() zeroes the series', async () => {
    const r = registry(Registry.PROMETHEUS_CONTENT_TYPE);
    const c = new CellMetric('counter', { name: 'c_total', help: 'h', labelNames: ['a'], registry: r });
    c.cell({ a: '1' }).value = 5;
    r.resetMetrics();
    expect(await r.metrics()).toContain('c_total{a="1"} 0');
  });
});

describe('writeExposition (the scrape) renders what Registry#metrics() renders', () => {
  /** A registry with cell metrics and prom-client's own metrics, both kinds with odd values. */
  function populated(format: RegistryContentType): Registry<RegistryContentType> {
    const r = registry(format);
    const counter = new CellMetric('counter', {
      name: 'req_total',
      help: 'Requests, with a "quote" and a \\ backslash\nand a newline.',
      labelNames: ['route', 'status'],
      registry: r,
    });
    for (let i = 0; i < 300; i++) counter.cell({ route: `r${i}`, status: '200' }).value = i * 1.5;
    counter.cell({ route: 'odd "name"\\\n', status: '500' }).value = Number.POSITIVE_INFINITY;
    const gauge = new CellMetric('gauge', { name: 'inflight', help: 'h', labelNames: [], registry: r });
    gauge.cell({}).value = Number.NaN;
    const hist = new CellHistogram({
      name: 'lat_seconds',
      help: 'h',
      labelNames: ['route'],
      buckets: BUCKETS,
      exemplars: true,
      registry: r,
    });
    for (let i = 0; i < 200; i++) {
      const cell = hist.cell({ route: `r${i}` });
      hist.observe(cell, i / 1000, i % 3 === 0 ? `trace-${i}` : undefined);
      hist.observe(cell, i, undefined);
    }
    const bare = new CellHistogram({
      name: 'bare_seconds',
      help: 'h',
      labelNames: [],
      buckets: BUCKETS,
      exemplars: false,
      registry: r,
    });
    bare.observe(bare.cell({}), 0.02, undefined);
    new CellMetric('counter', { name: 'empty_total', help: 'h', labelNames: ['a'], registry: r });
    new Counter({
      name: 'pc_total',
      help: 'prom-client counter',
      labelNames: ['x'],
      registers: [r as Registry],
    }).inc({ x: 'y' }, 2);
    new Gauge({ name: 'pg', help: 'prom-client gauge', registers: [r as Registry] }).set(4);
    return r;
  }

  it.each(FORMATS)('%s', async (format) => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2025-01-02T03:04:05.678Z'));
    const expected = await populated(format).metrics();
    const ours = populated(format);
    const chunks: string[] = [];
    const sink = (c: string) => {
      chunks.push(c);
    };
    await writeExposition(ours, format === Registry.OPENMETRICS_CONTENT_TYPE, sink, {
      chunkChars: 4096,
      sliceChars: 8192,
      sliceMs: 1,
    });
    expect(chunks.join('')).toBe(expected);
    expect(expected).toContain('lat_seconds_bucket{le="0.001",route="r1"} 1');
    // Written as it renders, not as one string.
    expect(chunks.length).toBeGreaterThan(1);
    // The registry's own counter names are left as they were (prom-client renames in place).
    expect(ours.getSingleMetric('pc_total')).toBeDefined();
    expect(await ours.getSingleMetricAsString('pc_total')).toContain('# TYPE pc_total counter');
  });

  it('gives the event loop a turn after every slice, and nothing else', async () => {
    const r = populated(Registry.PROMETHEUS_CONTENT_TYPE);
    const expected = await populated(Registry.PROMETHEUS_CONTENT_TYPE).metrics();
    // A setImmediate chain started before the scrape runs once in each turn of the event loop.
    let ticks = 0;
    let running = true;
    const tick = (): void => {
      ticks++;
      if (running) setImmediate(tick);
    };
    setImmediate(tick);
    let queuedBefore = false;
    setImmediate(() => {
      queuedBefore = true;
    });
    const chunks: string[] = [];
    const ticksAtChunk: number[] = [];
    // No time budget: slices end by characters only, so the count does not depend on the machine.
    const turns = await writeExposition(
      r,
      false,
      (c) => {
        chunks.push(c);
        ticksAtChunk.push(ticks);
      },
      { chunkChars: 1024, sliceChars: 4096, sliceMs: Number.POSITIVE_INFINITY },
    );
    const ticksAtEnd = ticks;
    running = false;
    expect(chunks.join('')).toBe(expected);
    // Every slice is at most 4 KB plus one piece (8 KB at most here): at least this many.
    expect(turns).toBeGreaterThanOrEqual(Math.floor(expected.length / (4096 + 8192)));
    // Each turn the scrape gave is exactly one turn of the loop: nothing ran in one piece longer.
    expect(ticksAtEnd).toBe(turns);
    expect(queuedBefore).toBe(true);
    // The first chunk went out before the loop turned: the render streams as it goes.
    expect(ticksAtChunk[0]).toBe(0);
    expect(new Set(ticksAtChunk).size).toBeGreaterThan(1);
  });
});
