import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { TelemetrySchema } from '../../../src/config/schema.ts';
import { createMetrics, type GatewayMetrics, renderMetrics } from '../../../src/telemetry/metrics.ts';
import {
  EXPORT_LOG_INTERVAL_MS,
  EXPORT_SLICE_SPANS,
  observeSpanExport,
} from '../../../src/telemetry/span-export.ts';
import { createTracing, type Tracing } from '../../../src/telemetry/tracing.ts';
import { startOtlpReceiver } from '../../helpers/otlp-receiver.ts';
import { memoryStream } from './memory-stream.ts';

const opened: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const close of opened.splice(0).reverse()) await close();
  vi.unstubAllEnvs();
});

async function sample(metrics: GatewayMetrics, series: string): Promise<number> {
  const { body } = await renderMetrics(metrics, undefined);
  const line = body.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? Number.NaN : Number(line.slice(series.length + 1));
}

/** An exporter whose every export ends with `result()`. */
function fakeExporter(result: () => ExportResult): SpanExporter {
  return {
    export: (_spans, done) => done(result()),
    shutdown: () => Promise.resolve(),
  };
}

const noSpans = (n: number) => new Array(n).fill({}) as ReadableSpan[];

describe('observeSpanExport', () => {
  it('counts spans by outcome and logs failures at most once a minute, then the recovery', async () => {
    const metrics = createMetrics({ exemplars: false, version: 'test' });
    const out = memoryStream();
    let now = 1_000_000;
    const observed = observeSpanExport({ metrics, logger: pino(out.stream), now: () => now });
    let ok = false;
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:4318'), { code: 'ECONNREFUSED' });
    const exporter = observed.exporter(fakeExporter(() => (ok ? { code: 0 } : { code: 1, error: refused })));
    const results: number[] = [];
    const run = (n: number) => exporter.export(noSpans(n), (r) => results.push(r.code));

    for (let i = 0; i < 5; i++) run(10);
    now += EXPORT_LOG_INTERVAL_MS - 1;
    run(10);
    const warnings = () =>
      out
        .lines()
        .filter((l) => l.msg === 'span export failed: spans are lost until the collector is reachable');
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]).toMatchObject({ batches: 1, spans: 10, err: { code: 'ECONNREFUSED' } });

    now += 1;
    run(10);
    // The next line covers everything that failed since the last one.
    expect(warnings()).toHaveLength(2);
    expect(warnings()[1]).toMatchObject({ batches: 6, spans: 60 });

    ok = true;
    run(7);
    run(3);
    expect(out.lines().filter((l) => l.msg === 'span export works again')).toHaveLength(1);
    expect(results).toEqual([1, 1, 1, 1, 1, 1, 1, 0, 0]);
    expect(await sample(metrics, 'peregrine_tracing_spans_total{outcome="failed"}')).toBe(70);
    expect(await sample(metrics, 'peregrine_tracing_spans_total{outcome="exported"}')).toBe(10);
    expect(await sample(metrics, 'peregrine_tracing_export_duration_seconds_count{outcome="failed"}')).toBe(
      7,
    );
    expect(await sample(metrics, 'peregrine_tracing_spans_total{outcome="dropped"}')).toBe(0);
  });
});

describe('a batch larger than EXPORT_SLICE_SPANS', () => {
  /** An exporter that keeps every slice it is handed and the callback that ends it. */
  function heldExporter() {
    const slices: { spans: ReadableSpan[]; done: (r: ExportResult) => void }[] = [];
    const exporter: SpanExporter = {
      export: (spans, done) => void slices.push({ spans, done }),
      shutdown: () => Promise.resolve(),
    };
    return { slices, exporter };
  }
  const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
  const spansNumbered = (n: number) =>
    Array.from({ length: n }, (_, i) => ({ name: `s${i}` })) as unknown as ReadableSpan[];

  it('goes to the exporter in slices, one a turn, and ends once every slice has its result', async () => {
    const metrics = createMetrics({ exemplars: false, version: 'test' });
    const held = heldExporter();
    const exporter = observeSpanExport({ metrics, logger: pino(memoryStream().stream) }).exporter(
      held.exporter,
    );
    const batch = spansNumbered(2 * EXPORT_SLICE_SPANS + 44);
    const results: ExportResult[] = [];
    exporter.export(batch, (r) => results.push(r));

    // One slice in this turn, the next in the next: the serialisation is spread over turns.
    expect(held.slices.map((s) => s.spans.length)).toEqual([EXPORT_SLICE_SPANS]);
    await turn();
    expect(held.slices).toHaveLength(2);
    await turn();
    await turn();
    expect(held.slices.map((s) => s.spans.length)).toEqual([EXPORT_SLICE_SPANS, EXPORT_SLICE_SPANS, 44]);
    expect(held.slices.flatMap((s) => s.spans)).toEqual(batch);

    // Results in any order; the batch ends with the last one, once.
    held.slices[2]!.done({ code: 0 });
    held.slices[0]!.done({ code: 0 });
    expect(results).toEqual([]);
    held.slices[1]!.done({ code: 0 });
    expect(results).toEqual([{ code: 0 }]);
    expect(await sample(metrics, 'peregrine_tracing_spans_total{outcome="exported"}')).toBe(batch.length);
    expect(await sample(metrics, 'peregrine_tracing_export_duration_seconds_count{outcome="exported"}')).toBe(
      3,
    );
  });

  it('fails when any slice fails, counting the spans of each slice by its own outcome', async () => {
    const metrics = createMetrics({ exemplars: false, version: 'test' });
    const held = heldExporter();
    const exporter = observeSpanExport({ metrics, logger: pino(memoryStream().stream) }).exporter(
      held.exporter,
    );
    const results: ExportResult[] = [];
    exporter.export(spansNumbered(EXPORT_SLICE_SPANS + 10), (r) => results.push(r));
    await turn();
    const error = new Error('collector said 503');
    held.slices[1]!.done({ code: 1, error });
    held.slices[0]!.done({ code: 0 });
    expect(results).toEqual([{ code: 1, error }]);
    expect(await sample(metrics, 'peregrine_tracing_spans_total{outcome="exported"}')).toBe(
      EXPORT_SLICE_SPANS,
    );
    expect(await sample(metrics, 'peregrine_tracing_spans_total{outcome="failed"}')).toBe(10);
  });

  it('reaches a real collector whole: every span once, in requests of at most EXPORT_SLICE_SPANS', async () => {
    const receiver = await startOtlpReceiver();
    opened.push(() => receiver.close());
    vi.stubEnv('OTEL_BSP_SCHEDULE_DELAY', '3600000');
    vi.stubEnv('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', '');
    vi.stubEnv('OTEL_EXPORTER_OTLP_ENDPOINT', '');
    const metrics = createMetrics({ exemplars: false, version: 'test' });
    const tracing = createTracing(
      TelemetrySchema.parse({ tracing: { exporter: 'otlp', endpoint: receiver.url, sampleRatio: 1 } }),
      { report: { metrics, logger: pino(memoryStream().stream) } },
    );
    // 512 spans fill the processor's default batch: one export, four slices.
    const ids = new Set<string>();
    for (let i = 0; i < 512; i++) {
      const span = tracing.startServerSpan('GET', {}, {});
      ids.add(span.spanContext().spanId);
      span.end();
    }
    const received = await receiver.waitForSpans(512);
    await tracing.shutdown();
    expect(receiver.rejected()).toEqual([]);
    expect(new Set(received.map((s) => s.spanId))).toEqual(ids);
    expect(received).toHaveLength(512);
    expect(receiver.contentTypes()).toHaveLength(512 / EXPORT_SLICE_SPANS);
    expect(await sample(metrics, 'peregrine_tracing_spans_total{outcome="exported"}')).toBe(512);
  });
});

/**
 * Contract with @opentelemetry/sdk-trace-base: its BatchSpanProcessor reports dropped spans and
 * its queue depth only through the experimental `selfObsMeterProvider` (see span-export.ts). If
 * this fails after an SDK upgrade, the instrument names or the option changed: adapt
 * SpanQueueMeter, or drops go uncounted again.
 */
describe('the BatchSpanProcessor contract behind peregrine_tracing_spans_total{outcome="dropped"}', () => {
  it('counts the spans a full queue drops, and reads the queue depth at scrape time', async () => {
    // A collector that never answers holds the first export in flight; a queue of 2 then fills.
    const hanging: Server = createServer(() => {});
    hanging.listen(0, '127.0.0.1');
    await once(hanging, 'listening');
    opened.push(
      () =>
        new Promise<void>((resolve) => {
          hanging.closeAllConnections();
          hanging.close(() => resolve());
        }),
    );
    vi.stubEnv('OTEL_BSP_MAX_QUEUE_SIZE', '2');
    vi.stubEnv('OTEL_BSP_MAX_EXPORT_BATCH_SIZE', '1');
    vi.stubEnv('OTEL_EXPORTER_OTLP_TIMEOUT', '200');
    vi.stubEnv('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', '');
    vi.stubEnv('OTEL_EXPORTER_OTLP_ENDPOINT', '');
    const metrics = createMetrics({ exemplars: false, version: 'test' });
    const out = memoryStream();
    const endpoint = `http://127.0.0.1:${(hanging.address() as AddressInfo).port}`;
    const tracing: Tracing = createTracing(
      TelemetrySchema.parse({ tracing: { exporter: 'otlp', endpoint, sampleRatio: 1 } }),
      { report: { metrics, logger: pino(out.stream) } },
    );
    opened.push(() => tracing.shutdown());

    // The first span goes straight into an export (batch size 1) that hangs; two wait in the
    // queue; the last two find it full.
    for (let i = 0; i < 5; i++) tracing.startServerSpan('GET', {}, {}).end();

    expect(await sample(metrics, 'peregrine_tracing_spans_total{outcome="dropped"}')).toBe(2);
    expect(await sample(metrics, 'peregrine_tracing_queued_spans')).toBe(2);
    expect(out.lines().find((l) => String(l.msg).startsWith('spans dropped'))).toMatchObject({
      level: 40,
      spans: 1,
    });
  });
});
