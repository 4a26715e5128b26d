/**
 * What a tool that reads the OpenTelemetry conventions (Tempo, Jaeger, the Collector's span-metrics
 * and servicegraph connectors) gets from the gateway, received by a real OTLP/HTTP receiver, for
 * each kind of exchange: a 200, a 503 retried into a 200, an upstream's 500, a request no route
 * matches, a refused connection and a WebSocket upgrade. For each: the SERVER and CLIENT spans'
 * names, attributes and status (the stable HTTP span conventions), the resource and scope, the
 * trace context the upstream received, and the access line's correlation fields (the log data
 * model's names).
 */
import type { IncomingMessage } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SCOPE_NAME } from '../../src/telemetry/tracing.ts';
import { VERSION } from '../../src/version.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from '../helpers/otlp-receiver.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';
import { opened, type WsUpstream, wsHandshake, wsUpstream } from '../helpers/ws-upstream.ts';

const OTLP_UNSET = 0;
const OTLP_ERROR = 2;
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/;

let up: TestUpstream;
/** Answers 503 to the first try of each request id, then passes it to the echo handler. */
let flaky: TestUpstream;
let chat: WsUpstream;
let otlp: OtlpReceiver;
let gw: TestGateway;

beforeAll(async () => {
  // Export promptly instead of the batch processor's 5 s schedule.
  process.env.OTEL_BSP_SCHEDULE_DELAY = '50';
  up = await startUpstream();
  const tries = new Map<string, number>();
  flaky = await startUpstream((req, res) => {
    const id = String(req.headers['x-request-id']);
    const n = (tries.get(id) ?? 0) + 1;
    tries.set(id, n);
    if (n > 1) return false;
    res.writeHead(503, { 'content-type': 'text/plain' }).end('busy');
    return true;
  });
  chat = await wsUpstream();
  otlp = await startOtlpReceiver();
  const fast = { base: '1ms', max: '2ms' };
  gw = await startGateway({
    telemetry: {
      serviceName: 'edge-gateway',
      tracing: { exporter: 'otlp', endpoint: otlp.url, sampleRatio: 1 },
    },
    upstreams: {
      users: { endpoints: [up.url] },
      flaky: { endpoints: [flaky.url], retries: { statuses: [503], backoff: fast } },
      dead: { endpoints: ['http://127.0.0.1:1'], retries: { maxAttempts: 1 } },
      chat: { endpoints: [chat.url] },
    },
    routes: [
      { name: 'users-api', match: { path: '/users' }, upstream: 'users', rewrite: { stripPrefix: '/users' } },
      {
        name: 'order',
        match: { path: '/orders/:id', pathType: 'template' },
        upstream: 'flaky',
        rewrite: { stripPrefix: '/orders' },
      },
      { name: 'dead', match: { path: '/dead', pathType: 'exact' }, upstream: 'dead' },
      { name: 'chat', match: { path: '/chat' }, upstream: 'chat' },
    ],
  });
});

afterAll(async () => {
  await gw?.close();
  await otlp?.close();
  await up?.close();
  await flaky?.close();
  await chat?.close();
});

interface Exchange {
  line: Record<string, unknown>;
  server: ReceivedSpan;
  clients: ReceivedSpan[];
}

/** The access line of request `requestId` and the spans of its trace (one SERVER, `attempts` CLIENT). */
async function exchange(requestId: string, attempts: number): Promise<Exchange> {
  const end = Date.now() + 10_000;
  for (;;) {
    const line = gw.logs.access().find((l) => l.requestId === requestId);
    const spans = line === undefined ? [] : otlp.spans().filter((s) => s.traceId === line.trace_id);
    const server = spans.find((s) => s.kind === 'server');
    const clients = spans.filter((s) => s.kind === 'client');
    if (line !== undefined && server !== undefined && clients.length >= attempts) {
      // The access line carries the trace context under the OpenTelemetry log data model's names.
      expect(line).toMatchObject({ trace_id: server.traceId, span_id: server.spanId, trace_flags: '01' });
      expect(line).not.toHaveProperty('traceId');
      expect(line).not.toHaveProperty('spanId');
      // Resource and scope: who made the span, which version, which instance.
      expect(server.resource).toMatchObject({
        'service.name': 'edge-gateway',
        'service.version': VERSION,
        'service.instance.id': expect.stringMatching(/^[0-9a-f-]{36}$/),
      });
      expect(server.resource).not.toHaveProperty('process.command_args');
      expect(server.scope).toEqual({ name: SCOPE_NAME, version: VERSION });
      for (const c of clients) expect(c.parentSpanId).toBe(server.spanId);
      return { line, server, clients };
    }
    if (Date.now() > end)
      throw new Error(`request ${requestId}: line ${line ? 'found' : 'missing'}, ${spans.length} spans`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function get(path: string, requestId: string): Promise<Response> {
  const res = await fetch(`${gw.url}${path}`, { headers: { 'x-request-id': requestId } });
  await res.arrayBuffer();
  return res;
}

/** What every SERVER span of a plain HTTP/1.1 request to this gateway carries. */
function serverBasics(path: string): Record<string, unknown> {
  return {
    'http.request.method': 'GET',
    'url.scheme': 'http',
    'url.path': path,
    'server.address': '127.0.0.1',
    'server.port': gw.port,
    'network.protocol.version': '1.1',
    'client.address': '127.0.0.1',
  };
}

/** The traceparent an upstream request carried: its parent must be the attempt's CLIENT span. */
function parentOf(headers: IncomingMessage['headers']): string | undefined {
  return TRACEPARENT.exec(String(headers.traceparent))?.[2];
}

describe('spans by the OpenTelemetry HTTP conventions', () => {
  it('a 200: the route template names the SERVER span, the attempt has url.full and the peer service', async () => {
    const res = await get('/users/42?fields=name&token=s3cr3t', 'sc-200');
    expect(res.status).toBe(200);
    const { server, clients } = await exchange('sc-200', 1);
    expect(server.name).toBe('GET /users/*');
    expect(server.status.code).toBe(OTLP_UNSET);
    expect(server.attributes).toMatchObject({
      ...serverBasics('/users/42'),
      'url.query': 'fields=REDACTED&token=REDACTED',
      'http.route': '/users/*',
      'peregrine.route': 'users-api',
      'http.response.status_code': 200,
    });
    expect(server.attributes).not.toHaveProperty('error.type');

    const [client] = clients;
    expect(client!.name).toBe('GET users');
    expect(client!.status.code).toBe(OTLP_UNSET);
    expect(client!.attributes).toMatchObject({
      'http.request.method': 'GET',
      'server.address': '127.0.0.1',
      'server.port': up.port,
      'url.full': `${up.url}/42?fields=REDACTED&token=REDACTED`,
      'peer.service': 'users',
      'server.service.name': 'users',
      'http.response.status_code': 200,
    });
    expect(client!.attributes).not.toHaveProperty('error.type');
    expect(client!.attributes).not.toHaveProperty('http.request.resend_count');
    const seen = up.requests.find((r) => r.headers['x-request-id'] === 'sc-200')!;
    expect(parentOf(seen.headers)).toBe(client!.spanId);
    // The secret stays in what the upstream needs, and nowhere in the telemetry.
    expect(seen.url).toBe('/42?fields=name&token=s3cr3t');
    expect(JSON.stringify(otlp.spans())).not.toContain('s3cr3t');
  });

  it('a 503 retried into a 200: the first attempt is an error, the second counts its resend', async () => {
    const res = await get('/orders/7', 'sc-retry');
    expect(res.status).toBe(200);
    const { server, clients } = await exchange('sc-retry', 2);
    expect(server.name).toBe('GET /orders/:id');
    expect(server.status.code).toBe(OTLP_UNSET);
    expect(server.attributes).toMatchObject({
      ...serverBasics('/orders/7'),
      'http.route': '/orders/:id',
      'peregrine.route': 'order',
      'http.response.status_code': 200,
    });
    expect(server.attributes).not.toHaveProperty('error.type');

    const [first, second] = clients.sort(
      (a, b) =>
        Number(a.attributes['http.request.resend_count'] ?? 0) -
        Number(b.attributes['http.request.resend_count'] ?? 0),
    );
    const attempt = {
      'http.request.method': 'GET',
      'server.address': '127.0.0.1',
      'server.port': flaky.port,
      'url.full': `${flaky.url}/7`,
      'peer.service': 'flaky',
      'server.service.name': 'flaky',
    };
    expect(first!.status.code).toBe(OTLP_ERROR);
    expect(first!.attributes).toMatchObject({
      ...attempt,
      'http.response.status_code': 503,
      'error.type': '503',
    });
    expect(first!.attributes).not.toHaveProperty('http.request.resend_count');
    expect(second!.status.code).toBe(OTLP_UNSET);
    expect(second!.attributes).toMatchObject({
      ...attempt,
      'http.response.status_code': 200,
      'http.request.resend_count': 1,
    });
    expect(second!.attributes).not.toHaveProperty('error.type');
    // Each try carried its own attempt's span as the parent.
    const seen = flaky.requests
      .filter((r) => r.headers['x-request-id'] === 'sc-retry')
      .map((r) => parentOf(r.headers));
    expect(seen.sort()).toEqual([first!.spanId, second!.spanId].sort());
  });

  it("an upstream's 500 passed through: both spans are errors typed by the status", async () => {
    const res = await get('/users/status/500', 'sc-500');
    expect(res.status).toBe(500);
    const { server, clients } = await exchange('sc-500', 1);
    expect(server.name).toBe('GET /users/*');
    expect(server.status.code).toBe(OTLP_ERROR);
    expect(server.attributes).toMatchObject({
      ...serverBasics('/users/status/500'),
      'http.route': '/users/*',
      'http.response.status_code': 500,
      'error.type': '500',
    });
    expect(clients[0]!.status.code).toBe(OTLP_ERROR);
    expect(clients[0]!.attributes).toMatchObject({
      'url.full': `${up.url}/status/500`,
      'peer.service': 'users',
      'http.response.status_code': 500,
      'error.type': '500',
    });
  });

  it('a request no route matches: a 404 named by its method alone, status unset, no error.type', async () => {
    const res = await get('/nowhere', 'sc-404');
    expect(res.status).toBe(404);
    const { server, clients, line } = await exchange('sc-404', 0);
    expect(clients).toEqual([]);
    expect(server.name).toBe('GET');
    expect(server.status.code).toBe(OTLP_UNSET);
    expect(server.attributes).toMatchObject({
      ...serverBasics('/nowhere'),
      'http.response.status_code': 404,
      'peregrine.code': 'ROUTE_NOT_FOUND',
    });
    expect(server.attributes).not.toHaveProperty('http.route');
    expect(server.attributes).not.toHaveProperty('error.type');
    expect(line).toMatchObject({ status: 404, code: 'ROUTE_NOT_FOUND' });
  });

  it('a refused connection: the attempt fails without a status, the 502 is typed by the code', async () => {
    const res = await get('/dead', 'sc-refused');
    expect(res.status).toBe(502);
    const { server, clients } = await exchange('sc-refused', 1);
    expect(server.name).toBe('GET /dead');
    expect(server.status.code).toBe(OTLP_ERROR);
    expect(server.attributes).toMatchObject({
      ...serverBasics('/dead'),
      'http.route': '/dead',
      'peregrine.route': 'dead',
      'http.response.status_code': 502,
      'error.type': 'UPSTREAM_CONNECT_FAILED',
    });
    const [client] = clients;
    expect(client!.status.code).toBe(OTLP_ERROR);
    expect(client!.attributes).toMatchObject({
      'http.request.method': 'GET',
      'server.address': '127.0.0.1',
      'server.port': 1,
      'url.full': 'http://127.0.0.1:1/dead',
      'peer.service': 'dead',
      'server.service.name': 'dead',
      'error.type': 'UPSTREAM_CONNECT_FAILED',
    });
    expect(client!.attributes).not.toHaveProperty('http.response.status_code');
  });

  it('a WebSocket upgrade: a SERVER and a CLIENT span like any request, and the upstream joins the trace', async () => {
    const h = wsHandshake(gw.port, '/chat/room-1', { 'x-request-id': 'sc-ws' });
    await opened(h);
    const reply = new Promise<string>((resolve) => h.ws.once('message', (m) => resolve(m.toString())));
    h.ws.send('hi');
    expect(await reply).toBe('echo:hi');
    h.ws.close();

    const { server, clients, line } = await exchange('sc-ws', 1);
    expect(line).toMatchObject({ status: 101, route: 'chat' });
    expect(server.name).toBe('GET /chat/*');
    expect(server.status.code).toBe(OTLP_UNSET);
    expect(server.attributes).toMatchObject({
      ...serverBasics('/chat/room-1'),
      'http.route': '/chat/*',
      'peregrine.route': 'chat',
      'http.response.status_code': 101,
    });
    const [client] = clients;
    const port = Number(new URL(chat.url).port);
    expect(client!.status.code).toBe(OTLP_UNSET);
    expect(client!.attributes).toMatchObject({
      'http.request.method': 'GET',
      'server.address': '127.0.0.1',
      'server.port': port,
      'url.full': `${chat.url}/chat/room-1`,
      'peer.service': 'chat',
      'http.response.status_code': 101,
    });
    const handshake = chat.handshakes.find((r) => r.headers['x-request-id'] === 'sc-ws')!;
    expect(parentOf(handshake.headers)).toBe(client!.spanId);
  });
});
