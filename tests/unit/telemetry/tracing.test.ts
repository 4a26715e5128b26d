import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import {
  InMemorySpanExporter,
  SamplingDecision,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
} from '@opentelemetry/sdk-trace-base';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { type TelemetryConfig, TelemetrySchema } from '../../../src/config/schema.ts';
import {
  attemptSpanAttributes,
  B3_HEADERS,
  createTracing,
  endClientSpan,
  endServerSpan,
  ratioBound,
  ratioKey,
  routeServerSpan,
  SCOPE_NAME,
  SERVICE_INSTANCE_ID,
  SPAN_ATTR,
  serverSpanName,
  type Tracing,
} from '../../../src/telemetry/tracing.ts';
import { VERSION } from '../../../src/version.ts';
import { type OtlpReceiver, startOtlpReceiver } from '../../helpers/otlp-receiver.ts';

const PARENT_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT_SPAN = '00f067aa0ba902b7';
const HEX32 = /^[0-9a-f]{32}$/;
const HEX16 = /^[0-9a-f]{16}$/;

function config(tracing: Record<string, unknown>): TelemetryConfig {
  return TelemetrySchema.parse({ serviceName: 'peregrine-test', tracing });
}

let receiver: OtlpReceiver;
const opened: Tracing[] = [];

function open(cfg: TelemetryConfig, processor?: SimpleSpanProcessor): Tracing {
  const t = createTracing(cfg, processor ? { spanProcessorForTests: processor } : undefined);
  opened.push(t);
  return t;
}

/** One request through the gateway: server span, one attempt, both ended. */
function oneRequest(
  t: Tracing,
  headers: IncomingHttpHeaders = {},
): { server: string; client: string; traceId: string; outbound: Record<string, string | string[]> } {
  const server = t.startServerSpan(
    'GET',
    { host: 'api.example.com:8080', 'user-agent': 'test/1', ...headers },
    {
      [SPAN_ATTR.URL_SCHEME]: 'http',
      [SPAN_ATTR.CLIENT_ADDRESS]: '10.0.0.1',
    },
  );
  routeServerSpan(server, 'GET', '/users/:id', 'users');
  const client = t.startClientSpan(
    server,
    'GET users-svc',
    attemptSpanAttributes(
      'GET',
      'http://10.0.0.5:8080',
      '10.0.0.5',
      8080,
      '/users/1',
      '?fields=name&token=s3cr3t',
      'users-svc',
      0,
    ),
  );
  const outbound: Record<string, string | string[]> = { traceparent: 'client-sent', accept: '*/*' };
  t.inject(client, outbound);
  endClientSpan(client, 200, undefined);
  endServerSpan(server, 200, undefined);
  return {
    server: t.traceIds(server).spanId,
    client: t.traceIds(client).spanId,
    traceId: t.traceIds(server).traceId,
    outbound,
  };
}

beforeEach(async () => {
  // Ambient OTEL_* variables would change what these tests see.
  for (const name of [
    'OTEL_EXPORTER_OTLP_ENDPOINT',
    'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
    'OTEL_TRACES_SAMPLER',
    'OTEL_TRACES_SAMPLER_ARG',
    'OTEL_SDK_DISABLED',
    'OTEL_SERVICE_NAME',
    'OTEL_EXPORTER_OTLP_TIMEOUT',
  ]) {
    vi.stubEnv(name, '');
  }
  receiver = await startOtlpReceiver();
});

afterEach(async () => {
  await Promise.all(opened.splice(0).map((t) => t.shutdown()));
  await receiver.close();
  vi.unstubAllEnvs();
});

describe('createTracing with the OTLP exporter', () => {
  it('exports the server span and its client span as OTLP/JSON', async () => {
    const t = open(config({ exporter: 'otlp', endpoint: receiver.url, sampleRatio: 1 }));
    const ids = oneRequest(t);
    await t.shutdown();
    const spans = await receiver.waitForSpans(2);
    expect(receiver.contentTypes().every((c) => c.startsWith('application/json'))).toBe(true);

    const server = spans.find((s) => s.kind === 'server')!;
    const client = spans.find((s) => s.kind === 'client')!;
    expect(server.spanId).toBe(ids.server);
    expect(server.traceId).toBe(ids.traceId);
    expect(server.parentSpanId).toBeUndefined();
    expect(server.name).toBe('GET /users/:id');
    expect(server.attributes).toMatchObject({
      'http.request.method': 'GET',
      'url.scheme': 'http',
      'client.address': '10.0.0.1',
      'server.address': 'api.example.com',
      'server.port': 8080,
      'user_agent.original': 'test/1',
      'http.route': '/users/:id',
      'peregrine.route': 'users',
      'http.response.status_code': 200,
    });
    expect(server.resource).toMatchObject({
      'service.name': 'peregrine-test',
      'service.version': VERSION,
      'service.instance.id': SERVICE_INSTANCE_ID,
    });
    expect(SERVICE_INSTANCE_ID).toMatch(
      /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    );
    // The process is described, but not by its command line (which can carry secrets).
    expect(server.resource['process.pid']).toBe(process.pid);
    expect(server.resource).not.toHaveProperty('process.command_args');
    expect(server.scope).toEqual({ name: SCOPE_NAME, version: VERSION });

    expect(client.parentSpanId).toBe(server.spanId);
    expect(client.traceId).toBe(server.traceId);
    expect(client.spanId).toBe(ids.client);
    expect(client.name).toBe('GET users-svc');
    expect(client.attributes).toMatchObject({
      'http.request.method': 'GET',
      'server.address': '10.0.0.5',
      'server.port': 8080,
      'url.full': 'http://10.0.0.5:8080/users/1?fields=REDACTED&token=REDACTED',
      'http.response.status_code': 200,
      'peer.service': 'users-svc',
      'server.service.name': 'users-svc',
      'peregrine.endpoint': 'http://10.0.0.5:8080',
    });
    // A first attempt is no resend.
    expect(client.attributes).not.toHaveProperty('http.request.resend_count');
  });

  it('continues an inbound W3C trace and forwards its tracestate', async () => {
    const t = open(config({ exporter: 'otlp', endpoint: receiver.url, sampleRatio: 0 }));
    const ids = oneRequest(t, {
      traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-01`,
      tracestate: 'vendor=abc',
    });
    expect(ids.traceId).toBe(PARENT_TRACE);
    expect(ids.outbound.tracestate).toBe('vendor=abc');
    await t.shutdown();
    // Sampled parent: exported although the root ratio is 0.
    const spans = await receiver.waitForSpans(2);
    const server = spans.find((s) => s.kind === 'server')!;
    expect(server.traceId).toBe(PARENT_TRACE);
    expect(server.parentSpanId).toBe(PARENT_SPAN);
    expect(server.traceState).toBe('vendor=abc');
  });

  it.each([
    ['b3 single header', { b3: `${PARENT_TRACE}-${PARENT_SPAN}-1` }],
    ['b3 multi header', { 'x-b3-traceid': PARENT_TRACE, 'x-b3-spanid': PARENT_SPAN, 'x-b3-sampled': '1' }],
  ])('accepts %s as the parent', async (_, headers) => {
    const t = open(config({ exporter: 'otlp', endpoint: receiver.url, sampleRatio: 0 }));
    const ids = oneRequest(t, headers);
    expect(ids.traceId).toBe(PARENT_TRACE);
    // W3C only goes out.
    expect(ids.outbound.traceparent).toBe(`00-${PARENT_TRACE}-${ids.client}-01`);
    expect(Object.keys(ids.outbound).some((h) => B3_HEADERS.has(h))).toBe(false);
    await t.shutdown();
    const server = (await receiver.waitForSpans(2)).find((s) => s.kind === 'server')!;
    expect(server.parentSpanId).toBe(PARENT_SPAN);
  });

  it('prefers a valid traceparent over B3 and falls back to B3 when traceparent is invalid', () => {
    const t = open(config({ exporter: 'none' }));
    const other = 'a'.repeat(32);
    const both = t.startServerSpan(
      'GET',
      { traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-01`, b3: `${other}-${PARENT_SPAN}-1` },
      {},
    );
    expect(t.traceIds(both).traceId).toBe(PARENT_TRACE);
    const broken = t.startServerSpan('GET', { traceparent: 'garbage', b3: `${other}-${PARENT_SPAN}-1` }, {});
    expect(t.traceIds(broken).traceId).toBe(other);
  });

  it('injects a traceparent naming the client span, replacing what the client sent', () => {
    const t = open(config({ exporter: 'otlp', endpoint: receiver.url, sampleRatio: 1 }));
    const ids = oneRequest(t, { traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-01`, tracestate: 'x=1' });
    expect(ids.outbound.traceparent).toBe(`00-${PARENT_TRACE}-${ids.client}-01`);
    expect(ids.outbound.accept).toBe('*/*');
    // A fresh root trace carries no tracestate: a stale one from the client is dropped.
    const root = open(config({ exporter: 'none', sampleRatio: 1 }));
    const span = root.startServerSpan('GET', {}, {});
    const headers: Record<string, string | string[]> = { tracestate: 'stale=1' };
    root.inject(span, headers);
    expect(headers.tracestate).toBeUndefined();
    expect(headers.traceparent).toBe(`00-${root.traceIds(span).traceId}-${root.traceIds(span).spanId}-01`);
  });

  it('at sampleRatio 0 without a sampled parent exports nothing but still hands out trace ids', async () => {
    const t = open(config({ exporter: 'otlp', endpoint: receiver.url, sampleRatio: 0 }));
    const server = t.startServerSpan('GET', {}, {});
    const ids = t.traceIds(server);
    expect(ids.traceId).toMatch(HEX32);
    expect(ids.traceId).not.toBe('0'.repeat(32));
    expect(ids.spanId).toMatch(HEX16);
    expect(ids.sampled).toBe(false);
    expect(server.isRecording()).toBe(false);
    const client = t.startClientSpan(server, 'GET up', {});
    expect(t.traceIds(client).traceId).toBe(ids.traceId);
    const headers: Record<string, string | string[]> = {};
    t.inject(client, headers);
    expect(headers.traceparent).toBe(`00-${ids.traceId}-${t.traceIds(client).spanId}-00`);
    client.end();
    server.end();
    await t.shutdown();
    expect(receiver.spans()).toHaveLength(0);
  });

  it('shutdown() is idempotent and survives an unreachable collector', async () => {
    vi.stubEnv('OTEL_EXPORTER_OTLP_TIMEOUT', '300');
    const t = open(config({ exporter: 'otlp', endpoint: 'http://127.0.0.1:9', sampleRatio: 1 }));
    oneRequest(t);
    const first = t.shutdown();
    expect(t.shutdown()).toBe(first);
    await expect(first).resolves.toBeUndefined();
    await expect(t.shutdown()).resolves.toBeUndefined();
  });

  it('lets OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_TRACES_SAMPLER_ARG override the config', async () => {
    vi.stubEnv('OTEL_EXPORTER_OTLP_ENDPOINT', receiver.url);
    vi.stubEnv('OTEL_TRACES_SAMPLER_ARG', '1');
    const t = open(config({ exporter: 'otlp', endpoint: 'http://127.0.0.1:9', sampleRatio: 0 }));
    oneRequest(t);
    await t.shutdown();
    expect(await receiver.waitForSpans(2)).toHaveLength(2);
  });

  it('keeps instances independent and registers nothing globally', async () => {
    const other = await startOtlpReceiver();
    try {
      const a = open(config({ exporter: 'otlp', endpoint: receiver.url, sampleRatio: 1 }));
      const b = open(config({ exporter: 'otlp', endpoint: other.url, sampleRatio: 1 }));
      const fromA = oneRequest(a);
      const fromB = oneRequest(b);
      await Promise.all([a.shutdown(), b.shutdown()]);
      expect((await receiver.waitForSpans(2)).map((s) => s.traceId)).toEqual([fromA.traceId, fromA.traceId]);
      expect((await other.waitForSpans(2)).map((s) => s.traceId)).toEqual([fromB.traceId, fromB.traceId]);
      // The global API still has no SDK behind it.
      expect(trace.getTracer('probe').startSpan('probe').isRecording()).toBe(false);
    } finally {
      await other.close();
    }
  });
});

describe('createTracing without an exporter', () => {
  it('hands out real ids in non-recording spans and keeps the parent sampled flag', () => {
    const t = open(config({ exporter: 'none', sampleRatio: 0 }));
    const root = t.startServerSpan('GET', {}, {});
    expect(root.isRecording()).toBe(false);
    expect(t.traceIds(root).traceId).toMatch(HEX32);
    expect(t.traceIds(root).sampled).toBe(false);

    const child = t.startServerSpan('GET', { traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-01` }, {});
    expect(child.isRecording()).toBe(false);
    expect(t.traceIds(child)).toMatchObject({ traceId: PARENT_TRACE, sampled: true });
    const attempt = t.startClientSpan(child, 'GET up', {});
    const headers: Record<string, string | string[]> = {};
    t.inject(attempt, headers);
    expect(headers.traceparent).toBe(`00-${PARENT_TRACE}-${t.traceIds(attempt).spanId}-01`);
    expect(t.traceIds(attempt).spanId).not.toBe(t.traceIds(child).spanId);
  });

  it('decides roots before the SDK: only sampled roots reach it, with the trace id that was sampled', async () => {
    const exporter = new InMemorySpanExporter();
    const processor = new SimpleSpanProcessor(exporter);
    const started: string[] = [];
    const onStart = processor.onStart.bind(processor);
    processor.onStart = (span, ctx) => {
      started.push(span.spanContext().traceId);
      onStart(span, ctx);
    };
    const t = open(config({ exporter: 'none', sampleRatio: 0.5 }), processor);
    const sampled: string[] = [];
    const unsampled: string[] = [];
    for (let i = 0; i < 400; i++) {
      const span = t.startServerSpan('GET', {}, {});
      const ids = t.traceIds(span);
      (ids.sampled ? sampled : unsampled).push(ids.traceId);
      expect(span.isRecording()).toBe(ids.sampled);
      span.end();
    }
    // About half (binomial, n = 400, sd 10: 150..250 is five sd each way). Were the SDK to draw
    // its own trace id and decide again, only a quarter would come out sampled.
    expect(sampled.length).toBeGreaterThan(150);
    expect(sampled.length).toBeLessThan(250);
    // The SDK saw exactly the sampled roots, each under the trace id the decision was made on.
    expect(started).toEqual(sampled);
    await processor.forceFlush();
    expect(exporter.getFinishedSpans().map((s) => s.spanContext().traceId)).toEqual(sampled);
    // Fresh ids every time, and the preset never leaks into the next root.
    expect(new Set([...sampled, ...unsampled]).size).toBe(400);
    // Each decision is the one the SDK's ratio sampler makes on that trace id.
    const sdk = new TraceIdRatioBasedSampler(0.5);
    const decide = (id: string): boolean =>
      sdk.shouldSample(ROOT_CONTEXT, id).decision === SamplingDecision.RECORD_AND_SAMPLED;
    expect(sampled.every(decide)).toBe(true);
    expect(unsampled.some(decide)).toBe(false);
  });

  it('records into a test span processor when one is given', async () => {
    const exporter = new InMemorySpanExporter();
    const processor = new SimpleSpanProcessor(exporter);
    const t = open(config({ exporter: 'none', sampleRatio: 1 }), processor);
    const ids = oneRequest(t);
    // SimpleSpanProcessor exports once the resource's async attributes (host id) settle.
    await processor.forceFlush();
    const spans = exporter.getFinishedSpans();
    expect(spans.map((s) => s.kind).sort()).toEqual([SpanKind.SERVER, SpanKind.CLIENT].sort());
    const client = spans.find((s) => s.kind === SpanKind.CLIENT)!;
    expect(client.parentSpanContext?.spanId).toBe(ids.server);
    expect(client.resource.attributes['service.name']).toBe('peregrine-test');
  });
});

describe('attributes given when a span starts', () => {
  // Set on the span once the SDK made it, not handed to startSpan: every path that reaches the
  // SDK must still deliver them, checked and in full.
  async function recordedSpans(sampler: string | undefined, headers: IncomingHttpHeaders = {}) {
    if (sampler !== undefined) vi.stubEnv('OTEL_TRACES_SAMPLER', sampler);
    const exporter = new InMemorySpanExporter();
    const processor = new SimpleSpanProcessor(exporter);
    const t = open(config({ exporter: 'none', sampleRatio: 1 }), processor);
    const server = t.startServerSpan(
      'GET',
      { host: 'api.example.com', ...headers },
      {
        'url.scheme': 'https',
        'client.address': '10.0.0.1',
        // Not an attribute value: dropped, as the SDK drops it, and the others kept.
        'peregrine.bad': { nested: true } as unknown as string,
      },
    );
    const client = t.startClientSpan(
      server,
      'GET users-svc',
      attemptSpanAttributes('GET', 'http://10.0.0.5:8080', '10.0.0.5', 8080, '/a', '?q=1', 'users-svc', 1),
    );
    endClientSpan(client, 200, undefined);
    endServerSpan(server, 200, undefined);
    await processor.forceFlush();
    const spans = exporter.getFinishedSpans();
    return {
      server: spans.find((s) => s.kind === SpanKind.SERVER)!,
      client: spans.find((s) => s.kind === SpanKind.CLIENT)!,
    };
  }

  const SERVER_ATTRIBUTES = {
    'url.scheme': 'https',
    'client.address': '10.0.0.1',
    'http.request.method': 'GET',
    'server.address': 'api.example.com',
    'server.port': 443,
    'http.response.status_code': 200,
  };
  const CLIENT_ATTRIBUTES = {
    'http.request.method': 'GET',
    'server.address': '10.0.0.5',
    'server.port': 8080,
    'url.full': 'http://10.0.0.5:8080/a?q=REDACTED',
    'peer.service': 'users-svc',
    'server.service.name': 'users-svc',
    'peregrine.endpoint': 'http://10.0.0.5:8080',
    'http.request.resend_count': 1,
    'http.response.status_code': 200,
  };

  it('reach the SDK span for roots the gateway sampled', async () => {
    const { server, client } = await recordedSpans(undefined);
    expect(server.attributes).toEqual(SERVER_ATTRIBUTES);
    expect(client.attributes).toEqual(CLIENT_ATTRIBUTES);
  });

  it('reach the SDK span for a sampled remote parent', async () => {
    const { server, client } = await recordedSpans(undefined, {
      traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-01`,
    });
    expect(server.parentSpanContext?.spanId).toBe(PARENT_SPAN);
    expect(server.attributes).toEqual(SERVER_ATTRIBUTES);
    expect(client.attributes).toEqual(CLIENT_ATTRIBUTES);
  });

  it('reach the SDK span when OTEL_TRACES_SAMPLER decides', async () => {
    const { server, client } = await recordedSpans('always_on');
    expect(server.attributes).toEqual(SERVER_ATTRIBUTES);
    expect(client.attributes).toEqual(CLIENT_ATTRIBUTES);
  });
});

/** An ES module script run from the repository's root in a fresh Node, without OTEL_* variables. */
function runFresh(script: string) {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('OTEL_')) env[k] = v;
  return spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: join(import.meta.dirname, '../../..'),
    env,
    encoding: 'utf8',
    timeout: 30_000,
  });
}

describe('loading the SDK', () => {
  it('is left out while no spans are recorded, and loaded once an exporter is configured', () => {
    // A fresh process: which OTel packages are loaded after createTracing with exporter none, then otlp.
    const script = `
      import { createRequire } from 'node:module';
      import { TelemetrySchema } from './src/config/schema.ts';
      import { createTracing } from './src/telemetry/tracing.ts';
      const loaded = () => Object.keys(createRequire(import.meta.url).cache)
        .filter((f) => /@opentelemetry[\\/](sdk-trace-base|resources|exporter-trace-otlp-http)[\\/]/.test(f))
        .map((f) => f.match(/@opentelemetry[\\/]([^\\/]+)/)[1]);
      const cfg = (tracing) => TelemetrySchema.parse({ serviceName: 't', tracing });
      const none = createTracing(cfg({ exporter: 'none', sampleRatio: 1 }));
      none.startServerSpan('GET', {}, {}).end();
      const before = [...new Set(loaded())].sort();
      const otlp = createTracing(cfg({ exporter: 'otlp', endpoint: 'http://127.0.0.1:9', sampleRatio: 1 }));
      const after = [...new Set(loaded())].sort();
      await otlp.shutdown();
      console.log(JSON.stringify({ before, after }));
    `;
    const result = runFresh(script);
    expect(result.stderr).toBe('');
    expect(JSON.parse(result.stdout)).toEqual({
      before: [],
      after: ['exporter-trace-otlp-http', 'resources', 'sdk-trace-base'],
    });
  });

  it("exports to an http: collector without loading Node's bundled undici", () => {
    // A fresh process: `http` is only ever required, so Node's own undici could only come from the
    // exporter's `import('http')` (its namespace's WebSocket getter).
    const script = `
      import { createRequire } from 'node:module';
      import { TelemetrySchema } from './src/config/schema.ts';
      import { createTracing } from './src/telemetry/tracing.ts';
      const http = createRequire(import.meta.url)('node:http');
      const bodies = [];
      const collector = http.createServer((req, res) => {
        let body = '';
        req.on('data', (c) => (body += c));
        req.on('end', () => { bodies.push(body); res.end('{}'); });
      });
      await new Promise((resolve) => collector.listen(0, '127.0.0.1', resolve));
      const endpoint = 'http://127.0.0.1:' + collector.address().port;
      const t = createTracing(TelemetrySchema.parse({ serviceName: 't', tracing: { exporter: 'otlp', endpoint, sampleRatio: 1 } }));
      t.startServerSpan('GET', {}, {}).end();
      await t.shutdown();
      collector.close();
      const spans = bodies.flatMap((b) => JSON.parse(b).resourceSpans[0].scopeSpans[0].spans);
      const bundled = process.moduleLoadList.filter((m) => m.includes('undici'));
      console.log(JSON.stringify({ spans: spans.map((s) => s.name), bundled }));
    `;
    const result = runFresh(script);
    expect(result.stderr).toBe('');
    expect(JSON.parse(result.stdout)).toEqual({ spans: ['GET'], bundled: [] });
  });
});

describe('root sampling on the trace id bytes', () => {
  it("decides as the SDK's TraceIdRatioBasedSampler does, at every ratio", () => {
    const ratios = [0, 1e-9, 0.001, 0.1, 0.25, 0.5, 0.9, 0.999999, 1, Number.NaN, -1, 2];
    // Ids near the edges too: all ones, one word set, and keys just either side of a bound.
    const ids = [Buffer.alloc(16, 0xff), Buffer.from('00000001000000000000000000000000', 'hex')];
    for (let i = 0; i < 2000; i++) ids.push(randomBytes(16));
    for (const ratio of [0.1, 0.5]) {
      const bound = ratioBound(ratio);
      for (const key of [bound - 1, bound]) {
        const id = Buffer.alloc(16);
        id.writeUInt32BE(key >>> 0, 12);
        ids.push(id);
      }
    }
    for (const ratio of ratios) {
      const sdk = new TraceIdRatioBasedSampler(ratio);
      const bound = ratioBound(ratio);
      let sampled = 0;
      for (const bytes of ids) {
        const hex = bytes.toString('hex');
        const ours = ratioKey(bytes) < bound;
        const theirs = sdk.shouldSample(ROOT_CONTEXT, hex).decision === SamplingDecision.RECORD_AND_SAMPLED;
        if (ours !== theirs) throw new Error(`ratio ${ratio}, trace id ${hex}: ours ${ours}, SDK ${theirs}`);
        if (ours) sampled++;
      }
      if (ratio >= 1) expect(sampled).toBe(ids.length);
      if (!(ratio > 0)) expect(sampled).toBe(0);
    }
  });

  it('reads the key at an offset into a larger buffer', () => {
    const pool = randomBytes(64);
    expect(ratioKey(pool, 16)).toBe(ratioKey(Buffer.from(pool.subarray(16, 32))));
    expect(ratioKey(pool, 16)).toBe(
      (pool.readUInt32BE(16) ^ pool.readUInt32BE(20) ^ pool.readUInt32BE(24) ^ pool.readUInt32BE(28)) >>> 0,
    );
  });
});

describe('span helpers', () => {
  function recorded() {
    const exporter = new InMemorySpanExporter();
    const processor = new SimpleSpanProcessor(exporter);
    const t = open(config({ exporter: 'none', sampleRatio: 1 }), processor);
    const finished = async () => {
      await processor.forceFlush();
      return exporter.getFinishedSpans();
    };
    return { t, finished };
  }

  it("marks server spans as errors for 5xx, sent or the local failure's, and for responses not delivered", async () => {
    const { t, finished } = recorded();
    endServerSpan(t.startServerSpan('GET', {}, {}), 404, 'ROUTE_NOT_FOUND');
    endServerSpan(t.startServerSpan('GET', {}, {}), 503, 'NO_HEALTHY_ENDPOINT');
    endServerSpan(t.startServerSpan('GET', {}, {}), 502, undefined);
    endServerSpan(t.startServerSpan('GET', {}, {}), 200, 'UPSTREAM_BODY_TIMEOUT');
    endServerSpan(t.startServerSpan('GET', {}, {}), undefined, 'CLIENT_CLOSED');
    endServerSpan(t.startServerSpan('GET', {}, {}), 502, 'CLIENT_CLOSED');
    endServerSpan(t.startServerSpan('GET', {}, {}), 200, 'CLIENT_CLOSED');
    const [notFound, unavailable, relayed, cut, gone, goneAfter502, goneAfter200] = await finished();
    expect(notFound!.status.code).toBe(SpanStatusCode.UNSET);
    expect(notFound!.attributes['error.type']).toBeUndefined();
    expect(notFound!.attributes).toMatchObject({
      'http.response.status_code': 404,
      'peregrine.code': 'ROUTE_NOT_FOUND',
    });
    expect(unavailable!.status.code).toBe(SpanStatusCode.ERROR);
    expect(unavailable!.attributes).toMatchObject({
      'error.type': 'NO_HEALTHY_ENDPOINT',
      'http.response.status_code': 503,
    });
    // An upstream's 5xx relayed as it is: the status is the error.
    expect(relayed!.status.code).toBe(SpanStatusCode.ERROR);
    expect(relayed!.attributes['error.type']).toBe('502');
    // The head went out as 200, then the gateway cut the body: a server failure all the same.
    expect(cut!.status.code).toBe(SpanStatusCode.ERROR);
    expect(cut!.attributes['error.type']).toBe('UPSTREAM_BODY_TIMEOUT');
    // The client went away before any response: the request failed (cancelled), and no status
    // code was sent, so none is recorded.
    expect(gone!.status.code).toBe(SpanStatusCode.ERROR);
    expect(gone!.attributes['error.type']).toBe('CLIENT_CLOSED');
    expect(gone!.attributes).not.toHaveProperty('http.response.status_code');
    // After the head: the server's own 5xx stays the error; a 200 cut short is an error too.
    expect(goneAfter502!.attributes['error.type']).toBe('502');
    expect(goneAfter200!.status.code).toBe(SpanStatusCode.ERROR);
    expect(goneAfter200!.attributes).toMatchObject({
      'error.type': 'CLIENT_CLOSED',
      'http.response.status_code': 200,
    });
  });

  it('marks client spans as errors for 4xx, 5xx and failed attempts, with or without a status', async () => {
    const { t, finished } = recorded();
    const server = t.startServerSpan('GET', {}, {});
    endClientSpan(t.startClientSpan(server, 'a', {}), 404, undefined);
    endClientSpan(t.startClientSpan(server, 'b', {}), undefined, 'UPSTREAM_CONNECT_FAILED');
    endClientSpan(t.startClientSpan(server, 'c', {}), 503, undefined);
    endClientSpan(t.startClientSpan(server, 'd', {}), 200, 'UPSTREAM_RESET');
    endClientSpan(t.startClientSpan(server, 'e', {}), 302, undefined);
    const [notFound, refused, unavailable, cut, redirect] = await finished();
    expect(notFound!.status.code).toBe(SpanStatusCode.ERROR);
    expect(notFound!.attributes).toMatchObject({ 'error.type': '404', 'http.response.status_code': 404 });
    expect(refused!.attributes['http.response.status_code']).toBeUndefined();
    expect(refused!.attributes['error.type']).toBe('UPSTREAM_CONNECT_FAILED');
    expect(refused!.status.code).toBe(SpanStatusCode.ERROR);
    expect(unavailable!.status.code).toBe(SpanStatusCode.ERROR);
    expect(unavailable!.attributes['error.type']).toBe('503');
    expect(cut!.status.code).toBe(SpanStatusCode.ERROR);
    expect(cut!.attributes).toMatchObject({
      'error.type': 'UPSTREAM_RESET',
      'http.response.status_code': 200,
    });
    expect(redirect!.status.code).toBe(SpanStatusCode.UNSET);
    expect(redirect!.attributes['error.type']).toBeUndefined();
  });

  it("records a failed attempt's outcome, so the client's doing reads apart from the upstream's", async () => {
    const { t, finished } = recorded();
    const server = t.startServerSpan('GET', {}, {});
    endClientSpan(t.startClientSpan(server, 'a', {}), undefined, 'CLIENT_CLOSED', 'client_abort');
    endClientSpan(t.startClientSpan(server, 'b', {}), undefined, 'UPSTREAM_TIMEOUT', 'client_timeout');
    endClientSpan(t.startClientSpan(server, 'c', {}), undefined, 'UPSTREAM_TLS_VERIFY_FAILED', 'tls_error');
    // An answered attempt has no failure: its outcome is not recorded.
    endClientSpan(t.startClientSpan(server, 'd', {}), 503, undefined, 'success');
    const [gone, slowReader, badCert, answered] = await finished();
    for (const span of [gone, slowReader, badCert]) expect(span!.status.code).toBe(SpanStatusCode.ERROR);
    expect(gone!.attributes).toMatchObject({
      'error.type': 'CLIENT_CLOSED',
      'peregrine.outcome': 'client_abort',
    });
    expect(slowReader!.attributes).toMatchObject({
      'error.type': 'UPSTREAM_TIMEOUT',
      'peregrine.outcome': 'client_timeout',
    });
    expect(badCert!.attributes).toMatchObject({
      'error.type': 'UPSTREAM_TLS_VERIFY_FAILED',
      'peregrine.outcome': 'tls_error',
    });
    expect(answered!.attributes['peregrine.outcome']).toBeUndefined();
    expect(answered!.attributes['error.type']).toBe('503');
  });

  it('names spans after the method and route template, folding unknown methods', async () => {
    expect(serverSpanName('GET')).toBe('GET');
    expect(serverSpanName('POST', '/orders/*')).toBe('POST /orders/*');
    expect(serverSpanName('PROPFIND', '/dav/*')).toBe('HTTP /dav/*');
    const { t, finished } = recorded();
    t.startServerSpan('PROPFIND', {}, {}).end();
    const routed = t.startServerSpan('PROPFIND', {}, {});
    routeServerSpan(routed, 'PROPFIND', '/dav/*', 'dav');
    routed.end();
    const [unknown, dav] = await finished();
    expect(unknown!.attributes).toMatchObject({
      'http.request.method': '_OTHER',
      'http.request.method_original': 'PROPFIND',
    });
    expect(dav!.name).toBe('HTTP /dav/*');
    expect(dav!.attributes).toMatchObject({ 'http.route': '/dav/*', 'peregrine.route': 'dav' });
  });

  it('takes server.address and server.port from the Host, the port from the scheme when it names none', async () => {
    const { t, finished } = recorded();
    t.startServerSpan('GET', { host: 'api.example.com' }, { 'url.scheme': 'https' }).end();
    t.startServerSpan('GET', { host: '[::1]:8443' }, { 'url.scheme': 'https' }).end();
    t.startServerSpan('GET', { ':authority': 'h2.example.com:9443' } as IncomingHttpHeaders, {
      'url.scheme': 'https',
    }).end();
    t.startServerSpan('GET', {}, { 'url.scheme': 'http' }).end();
    const [named, v6, h2, none] = await finished();
    expect(named!.attributes).toMatchObject({ 'server.address': 'api.example.com', 'server.port': 443 });
    expect(v6!.attributes).toMatchObject({ 'server.address': '::1', 'server.port': 8443 });
    expect(h2!.attributes).toMatchObject({ 'server.address': 'h2.example.com', 'server.port': 9443 });
    expect(none!.attributes).not.toHaveProperty('server.address');
    expect(none!.attributes).not.toHaveProperty('server.port');
  });

  it('describes an attempt: url.full with query values redacted, the peer service, resends counted', () => {
    expect(
      attemptSpanAttributes(
        'GET',
        'https://pay.internal',
        'pay.internal',
        443,
        '/v1/charge',
        '',
        'payments',
        2,
      ),
    ).toEqual({
      'http.request.method': 'GET',
      'server.address': 'pay.internal',
      'server.port': 443,
      'url.full': 'https://pay.internal/v1/charge',
      'peer.service': 'payments',
      'server.service.name': 'payments',
      'peregrine.endpoint': 'https://pay.internal',
      'http.request.resend_count': 2,
    });
    expect(
      attemptSpanAttributes(
        'PURGE',
        'http://10.0.0.5:8080',
        '10.0.0.5',
        8080,
        '/c',
        '?sig=abc&x',
        'cache',
        0,
      ),
    ).toMatchObject({
      'http.request.method': '_OTHER',
      'http.request.method_original': 'PURGE',
      'url.full': 'http://10.0.0.5:8080/c?sig=REDACTED&REDACTED',
    });
  });

  it('leaves the command line off the resource unless tracing.commandArgs asks for it', async () => {
    const t = open(config({ exporter: 'otlp', endpoint: receiver.url, sampleRatio: 1, commandArgs: true }));
    t.startServerSpan('GET', {}, {}).end();
    await t.shutdown();
    const [span] = await receiver.waitForSpans(1);
    expect(span!.resource['process.command_args']).toEqual([
      process.argv[0],
      ...process.execArgv,
      ...process.argv.slice(1),
    ]);
  });
});
