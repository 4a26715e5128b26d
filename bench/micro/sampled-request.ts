/**
 * Instructions per sampled request, tracing alone: the pipeline's tracing calls for one proxied
 * request (SERVER span with its attributes, route, CLIENT span with the attempt's attributes,
 * inject, the attributes set at the end, end both) through the SDK's BatchSpanProcessor (batches
 * of 512) into an exporter that serialises each batch as the OTLP/HTTP exporter does
 * (`JsonTraceSerializer`) and sends nothing. No timers, no network: the count repeats.
 *
 *   node bench/micro/sampled-request.ts            # two callgrind runs, N and 2N requests; prints the difference per request
 *   node bench/micro/sampled-request.ts --run N    # one run of N requests after a warmup (what callgrind runs)
 *   BENCH_SAMPLED_REQUESTS (2048): N
 *
 * Node runs with the launcher's GC flags. The difference of two whole-process counts leaves out start-up, module loading and warmup; V8's
 * compilers still land in both, so compare counts of one build against another, each taken twice.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExportResult } from '@opentelemetry/core';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import { BatchSpanProcessor, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import { TelemetrySchema } from '../../src/config/schema.ts';
import { createTracing } from '../../src/telemetry/tracing.ts';
import { type CategoryCosts, costByCategory } from '../lib/callgrind.ts';
import { intFromEnv } from '../lib/env.ts';
import { launcherGcFlags } from '../lib/launcher.ts';
import { pipelineSpans } from './pipeline-spans.ts';

/** Serialises every batch as the OTLP/HTTP JSON exporter would, and keeps only the byte count. */
class SerialisingExporter implements SpanExporter {
  bytes = 0;
  spans = 0;
  export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    this.bytes += JsonTraceSerializer.serializeRequest(spans)?.length ?? 0;
    this.spans += spans.length;
    done({ code: 0 });
  }
  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

/** Requests before the counted ones, in both runs: V8 has compiled the path by then. */
const WARMUP = 6_000;

async function run(requests: number): Promise<void> {
  const exporter = new SerialisingExporter();
  const tracing = createTracing(
    TelemetrySchema.parse({ serviceName: 'bench', tracing: { exporter: 'none', sampleRatio: 1 } }),
    { spanProcessorForTests: new BatchSpanProcessor(exporter, { scheduledDelayMillis: 3_600_000 }) },
  );
  // Batches leave when 512 spans wait; the processor finishes an export in later microtasks, so
  // the loop yields every 64 requests, as an event loop would between requests.
  const chunk = async (n: number, from: number) => {
    for (let done = 0; done < n; done += 64) {
      for (let i = 0; i < 64 && done + i < n; i++) pipelineSpans(tracing, `req-${from + done + i}`);
      await new Promise(setImmediate);
    }
  };
  await chunk(WARMUP, 0);
  const cpu = process.cpuUsage();
  await chunk(requests, WARMUP);
  await tracing.shutdown();
  const used = process.cpuUsage(cpu);
  process.stderr.write(
    `${exporter.spans} spans, ${exporter.bytes} bytes serialised; ` +
      `${((used.user + used.system) / requests).toFixed(2)} µs CPU a request (threads included)\n`,
  );
}

/** One whole-process count of `requests` requests (after the warmup), by category. */
function count(requests: number, dir: string): CategoryCosts {
  const out = join(dir, `callgrind.${requests}`);
  const r = spawnSync(
    'valgrind',
    [
      '--tool=callgrind',
      '--smc-check=all-non-file',
      `--callgrind-out-file=${out}`,
      process.execPath,
      ...launcherGcFlags(join(import.meta.dirname, '..', '..')),
      fileURLToPath(import.meta.url),
      '--run',
      String(requests),
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  if (r.status !== 0) throw new Error(`callgrind exited with ${r.status}`);
  const annotate = spawnSync('callgrind_annotate', ['--threshold=100', '--auto=no', out], {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  if (annotate.status !== 0) throw new Error(`callgrind_annotate exited with ${annotate.status}`);
  return costByCategory(annotate.stdout);
}

if (process.argv[2] === '--run') {
  await run(Number(process.argv[3]));
} else {
  const n = intFromEnv('BENCH_SAMPLED_REQUESTS', 2048);
  const dir = mkdtempSync(join(tmpdir(), 'sampled-request-'));
  try {
    const one = count(n, dir);
    const two = count(2 * n, dir);
    const k = (f: (c: CategoryCosts) => number) => `${((f(two) - f(one)) / n / 1000).toFixed(1)}k`;
    console.log(
      `sampled request, tracing alone: ${k((c) => c.total)} instructions; ` +
        `excl. compiler ${k((c) => c.total - c.compiler)}; excl. compiler and GC ${k((c) => c.total - c.compiler - c.gc)}`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
