/**
 * Tracing cost of one proxied request: startServerSpan (with W3C extraction when the client sent
 * a traceparent) + startClientSpan + inject + end both, at sampleRatio 0 and 1. Exported spans go
 * through a BatchSpanProcessor into an exporter that drops them, so the OTLP serialisation and the
 * network are not part of the number (they happen off the request path, in batches).
 *
 *   node bench/micro/tracing.ts
 */
import { spawnSync } from 'node:child_process';
import type { IncomingHttpHeaders } from 'node:http';
import { fileURLToPath } from 'node:url';
import {
  defaultTextMapGetter,
  defaultTextMapSetter,
  ROOT_CONTEXT,
  SpanKind,
  trace,
} from '@opentelemetry/api';
import { CompositePropagator, ExportResultCode, W3CTraceContextPropagator } from '@opentelemetry/core';
import { B3Propagator } from '@opentelemetry/propagator-b3';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  type ReadableSpan,
  type SpanExporter,
  TraceIdRatioBasedSampler,
} from '@opentelemetry/sdk-trace-base';
import { TelemetrySchema } from '../../src/config/schema.ts';
import {
  attemptSpanAttributes,
  createTracing,
  endClientSpan,
  endServerSpan,
  routeServerSpan,
  type Tracing,
} from '../../src/telemetry/tracing.ts';
import { bench, header } from './harness.ts';

class DroppingExporter implements SpanExporter {
  exported = 0;
  export(spans: ReadableSpan[], done: (r: { code: ExportResultCode }) => void): void {
    this.exported += spans.length;
    done({ code: ExportResultCode.SUCCESS });
  }
  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

const ROOT: IncomingHttpHeaders = { host: 'api.example.com', 'user-agent': 'bench/1' };
const CHILD: IncomingHttpHeaders = {
  ...ROOT,
  traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00',
};
const SAMPLED_CHILD: IncomingHttpHeaders = {
  ...ROOT,
  traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
};

function oneRequest(t: Tracing, headers: IncomingHttpHeaders): void {
  const server = t.startServerSpan('GET', headers, { 'url.scheme': 'http', 'client.address': '10.0.0.1' });
  routeServerSpan(server, 'GET', '/users/*', 'users');
  // As the pipeline does: the attempt is described only when its parent is recorded.
  const client = server.isRecording()
    ? t.startClientSpan(
        server,
        'GET users-svc',
        attemptSpanAttributes(
          'GET',
          'http://10.0.0.5:8080',
          '10.0.0.5',
          8080,
          '/users/42',
          '',
          'users-svc',
          0,
        ),
      )
    : t.startClientSpan(server, 'GET', {});
  const outbound: Record<string, string | string[]> = {};
  t.inject(client, outbound);
  t.traceIds(server);
  endClientSpan(client, 200, undefined);
  endServerSpan(server, 200, undefined);
}

function tracing(exporter: 'none' | 'batch', sampleRatio: number): Tracing {
  const cfg = TelemetrySchema.parse({ tracing: { exporter: 'none', sampleRatio } });
  if (exporter === 'none') return createTracing(cfg);
  // maxQueueSize large enough that the benchmark measures recording, not dropping.
  const processor = new BatchSpanProcessor(new DroppingExporter(), {
    maxQueueSize: 65_536,
    scheduledDelayMillis: 50,
  });
  return createTracing(cfg, { spanProcessorForTests: processor });
}

/**
 * Baseline: the straightforward use of the SDK (composite propagator, tracer.startSpan for every
 * span, propagator.inject), to show what the fast paths in tracing.ts save.
 */
function naiveSdk(sampleRatio: number): Tracing {
  const provider = new BasicTracerProvider({
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(sampleRatio) }),
    spanProcessors: [
      new BatchSpanProcessor(new DroppingExporter(), { maxQueueSize: 65_536, scheduledDelayMillis: 50 }),
    ],
  });
  const tracer = provider.getTracer('naive');
  const propagator = new CompositePropagator({
    propagators: [new B3Propagator(), new W3CTraceContextPropagator()],
  });
  return {
    startServerSpan: (method, headers, attributes) =>
      tracer.startSpan(
        method,
        { kind: SpanKind.SERVER, attributes },
        propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter),
      ),
    startClientSpan: (parent, name, attributes) =>
      tracer.startSpan(name, { kind: SpanKind.CLIENT, attributes }, trace.setSpan(ROOT_CONTEXT, parent)),
    inject: (span, headers) =>
      propagator.inject(trace.setSpan(ROOT_CONTEXT, span), headers, defaultTextMapSetter),
    injectInto: (span, headers) => {
      const carrier: Record<string, string> = {};
      propagator.inject(trace.setSpan(ROOT_CONTEXT, span), carrier, defaultTextMapSetter);
      for (const name in carrier) headers.push(name, carrier[name]!);
    },
    traceIds: (span) => {
      const sc = span.spanContext();
      return { traceId: sc.traceId, spanId: sc.spanId, sampled: (sc.traceFlags & 1) === 1 };
    },
    shutdown: () => provider.shutdown(),
  };
}

const CASES: Record<string, () => Tracing> = {
  'baseline: plain SDK usage, ratio 0': () => naiveSdk(0),
  'baseline: plain SDK usage, ratio 1': () => naiveSdk(1),
  'exporter none (ids + sampled flag only), ratio 0': () => tracing('none', 0),
  'exporter none, ratio 1': () => tracing('none', 1),
  'SDK + BatchSpanProcessor, ratio 0': () => tracing('batch', 0),
  'SDK + BatchSpanProcessor, ratio 1': () => tracing('batch', 1),
};

// Each case runs in its own process: instances left behind (background batch exports) and call
// sites made polymorphic by earlier cases would otherwise skew the later ones.
const only = process.argv[2];
if (only === undefined) {
  header('server span + client span + inject + end, per request (one process per case)');
  for (const name of Object.keys(CASES)) {
    const run = spawnSync(process.execPath, [fileURLToPath(import.meta.url), name], { stdio: 'inherit' });
    if (run.status !== 0) process.exitCode = 1;
  }
} else {
  const t = CASES[only]!();
  bench(`${only}, root`, () => oneRequest(t, ROOT), 100_000);
  bench(`${only}, W3C parent (unsampled)`, () => oneRequest(t, CHILD), 100_000);
  bench(`${only}, W3C parent (sampled)`, () => oneRequest(t, SAMPLED_CHILD), 100_000);
  await t.shutdown();
}
