/**
 * What one span export holds the event loop for: batches of 512 gateway-shaped spans (a SERVER and
 * a CLIENT span per request) exported by the real OTLP/HTTP exporter to a collector in this
 * process, either handed to the exporter whole (`whole`) or through the gateway's export wrapper,
 * which hands them over in slices of EXPORT_SLICE_SPANS, one per turn (`sliced`). Each call into
 * the exporter (serialisation and the start of the send, GC included) is timed in wall time: the
 * main thread's CPU clocks tick in 4 ms steps on this VM, so read medians and p90s, which a shared
 * machine disturbs less than the maximum. Major GCs and their pauses are counted, and
 * the bytes scavenges promote to the old generation (`--trace-gc-nvp`).
 *
 *   node bench/micro/export-turns.ts [whole|sliced] [batches=60]   (no mode: both, each in a fresh process)
 */
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { constants, type PerformanceEntry, PerformanceObserver, performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type { ExportResult } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import type { ReadableSpan, SpanExporter, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import pino from 'pino';
import { TelemetrySchema } from '../../src/config/schema.ts';
import { createMetrics } from '../../src/telemetry/metrics.ts';
import { observeSpanExport } from '../../src/telemetry/span-export.ts';
import { createTracing } from '../../src/telemetry/tracing.ts';
import { launcherGcFlags } from '../lib/launcher.ts';
import { pipelineSpans } from './pipeline-spans.ts';

const BATCH = 512;
const MEASURED = '-- measured --';

async function run(mode: 'whole' | 'sliced', batches: number): Promise<void> {
  const sink = createServer((req, res) => {
    req.resume();
    req.on('end', () => res.end('{}'));
  });
  sink.listen(0, '127.0.0.1');
  await once(sink, 'listening');
  const url = `http://127.0.0.1:${(sink.address() as AddressInfo).port}/v1/traces`;

  const made: ReadableSpan[] = [];
  const collect: SpanProcessor = {
    onStart() {},
    onEnd: (span) => void made.push(span),
    forceFlush: () => Promise.resolve(),
    shutdown: () => Promise.resolve(),
  };
  const tracing = createTracing(
    TelemetrySchema.parse({ serviceName: 'bench', tracing: { exporter: 'none', sampleRatio: 1 } }),
    { spanProcessorForTests: collect },
  );

  const otlp = new OTLPTraceExporter({ url });
  const calls: number[] = [];
  const timed: SpanExporter = {
    export(spans, done) {
      const start = performance.now();
      otlp.export(spans, done);
      calls.push(performance.now() - start);
    },
    shutdown: () => otlp.shutdown(),
  };
  const exporter =
    mode === 'whole'
      ? timed
      : observeSpanExport({
          metrics: createMetrics({ exemplars: false, version: 'bench' }),
          logger: pino({ level: 'silent' }),
        }).exporter(timed);

  const majors: number[] = [];
  const gc = new PerformanceObserver((list) => {
    for (const e of list.getEntries() as (PerformanceEntry & { detail?: { kind?: number } })[])
      if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors.push(e.duration);
  });
  const exportBatch = () =>
    new Promise<ExportResult>((resolve) => {
      made.length = 0;
      let i = 0;
      while (made.length < BATCH) pipelineSpans(tracing, `r-${i++}`);
      exporter.export(made.splice(0), resolve);
    });
  for (let i = 0; i < 10; i++) await exportBatch(); // warmup: compiled code
  calls.length = 0;
  console.log(MEASURED);
  gc.observe({ entryTypes: ['gc'] });
  for (let i = 0; i < batches; i++) {
    const r = await exportBatch();
    if (r.code !== 0) throw new Error(`export failed: ${r.error?.message}`);
  }
  gc.disconnect();
  await otlp.shutdown();
  sink.close();
  const sorted = [...calls].sort((a, b) => a - b);
  const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
  const total = calls.reduce((a, b) => a + b, 0);
  console.log(
    `${mode}: ${calls.length} calls into the exporter for ${batches} batches; wall time a call: median ${q(0.5).toFixed(2)} ms, ` +
      `p90 ${q(0.9).toFixed(2)}, max ${sorted.at(-1)!.toFixed(2)}; > 5 ms: ${calls.filter((c) => c > 5).length}; ` +
      `${(total / batches).toFixed(2)} ms a batch; major GCs ${majors.length}, longest ${Math.max(0, ...majors).toFixed(1)} ms`,
  );
}

const [mode, n] = process.argv.slice(2);
if (mode === 'whole' || mode === 'sliced') {
  await run(mode, Number(n ?? 60));
} else {
  const batches = n ?? '60';
  for (const m of ['whole', 'sliced', 'whole', 'sliced']) {
    // --trace-gc-nvp: every scavenge's promoted bytes, from the last run's start marker on.
    const r = spawnSync(
      process.execPath,
      [
        ...launcherGcFlags(fileURLToPath(new URL('../..', import.meta.url))),
        '--trace-gc-nvp',
        fileURLToPath(import.meta.url),
        m,
        batches,
      ],
      { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
    );
    if (r.status !== 0) {
      process.stderr.write(r.stderr);
      process.exit(r.status ?? 1);
    }
    const measured = r.stdout.slice(r.stdout.indexOf(MEASURED));
    let promoted = 0;
    for (const p of measured.matchAll(/promoted=(\d+)/g)) promoted += Number(p[1]);
    const line = measured.split('\n').find((l) => l.startsWith(`${m}:`));
    console.log(`${line}; promoted ${(promoted / Number(batches) / 1024).toFixed(0)} KiB a batch`);
  }
}
