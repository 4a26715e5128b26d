import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { TelemetrySchema } from '../../../src/config/schema.ts';
import { createMetrics, type GatewayMetrics, renderMetrics } from '../../../src/telemetry/metrics.ts';
import { EXPORT_LOG_INTERVAL_MS, observeSpanExport } from '../../../src/telemetry/span-export.ts';
import { createTracing, type Tracing } from '../../../src/telemetry/tracing.ts';
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
