/**
 * WebSocket handshakes take the request path's stages: the upstream's circuit breaker and bulkhead
 * admit them, an open tunnel holds its bulkhead slot until it closes, and each handshake has a
 * SERVER span and a CLIENT attempt span whose context the upstream receives.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterEach, describe, expect, it } from 'vitest';
import type { ConfigInput } from '../../src/config/schema.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { parseHead, rawExchange } from '../helpers/raw-http.ts';
import { type Handshake, opened, refusal, wsHandshake, wsUpstream } from '../helpers/ws-upstream.ts';

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function gatewayFor(
  upstream: NonNullable<ConfigInput['upstreams']>[string],
  opts: { spans?: InMemorySpanExporter } = {},
): Promise<TestGateway> {
  const gw = await startGateway(
    {
      telemetry: opts.spans ? { tracing: { sampleRatio: 1 } } : {},
      upstreams: { u: upstream },
      routes: [{ name: 'ws', match: { path: '/' }, upstream: 'u' }],
    },
    opts.spans ? { spanProcessor: new SimpleSpanProcessor(opts.spans) } : {},
  );
  cleanup.push(() => gw.close());
  return gw;
}

function handshake(gw: TestGateway, path = '/chat', headers: Record<string, string> = {}): Handshake {
  const h = wsHandshake(gw.port, path, headers);
  cleanup.push(async () => h.ws.terminate());
  return h;
}

async function bulkhead(gw: TestGateway): Promise<{ active: number; queued: number }> {
  const body = (await (await fetch(`${gw.adminUrl}/v1/upstreams`)).json()) as {
    upstreams: { bulkhead: { active: number; queued: number } }[];
  };
  return body.upstreams[0]!.bulkhead;
}

async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('WebSocket upgrades are admitted like requests', () => {
  it('an open circuit refuses the handshake with 503 CIRCUIT_OPEN before the upstream sees it', async () => {
    const up = await wsUpstream(503);
    cleanup.push(() => up.close());
    const gw = await gatewayFor({
      endpoints: [up.url],
      retries: { maxAttempts: 1 },
      circuitBreaker: { consecutiveFailures: 2, openDuration: '30s' },
      outlierDetection: { enabled: false },
    });
    for (let i = 0; i < 2; i++) expect((await fetch(`${gw.url}/plain`)).status).toBe(503);

    const h = handshake(gw);
    const refused = await refusal(h);
    expect(refused.status).toBe(503);
    expect(refused.headers['x-peregrine-reason']).toBe('CIRCUIT_OPEN');
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
    expect(JSON.parse(refused.body)).toMatchObject({ code: 'CIRCUIT_OPEN' });
    expect(up.handshakes).toHaveLength(0);
    await waitFor(() => gw.logs.access().some((l) => l.code === 'CIRCUIT_OPEN' && l.status === 503));
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toContain('peregrine_websocket_upgrades_total{route="ws",outcome="refused"} 1');
  });

  it('an open tunnel holds its bulkhead slot until it closes; a full bulkhead refuses handshakes and requests', async () => {
    const up = await wsUpstream();
    cleanup.push(() => up.close());
    const gw = await gatewayFor({ endpoints: [up.url], bulkhead: { maxConcurrent: 1, maxQueued: 0 } });

    const first = handshake(gw);
    await opened(first);
    expect(await bulkhead(gw)).toEqual({ active: 1, queued: 0, maxConcurrent: 1, maxQueued: 0 });

    const second = handshake(gw);
    const refused = await refusal(second);
    expect(refused.status).toBe(503);
    expect(refused.headers['x-peregrine-reason']).toBe('UPSTREAM_OVERLOADED');
    // The tunnel counts against the upstream for requests too.
    const plain = await fetch(`${gw.url}/plain`);
    expect(plain.status).toBe(503);
    expect(plain.headers.get('x-peregrine-reason')).toBe('UPSTREAM_OVERLOADED');
    expect(up.handshakes).toHaveLength(1);
    expect(up.plainRequests).toBe(0);

    // Still open and still working; closing it gives the slot back.
    const reply = new Promise<string>((r) => first.ws.once('message', (m) => r(m.toString())));
    first.ws.send('hi');
    expect(await reply).toBe('echo:hi');
    first.ws.close();
    await waitFor(async () => (await bulkhead(gw)).active === 0);
    const third = handshake(gw);
    await opened(third);
    expect((await fetch(`${gw.url}/plain`)).status).toBe(503);
    third.ws.terminate();
    await waitFor(async () => (await bulkhead(gw)).active === 0);
    expect((await fetch(`${gw.url}/plain`)).status).toBe(200);
  });

  it('a handshake waits in the bulkhead queue and goes through when a tunnel closes', async () => {
    const up = await wsUpstream();
    cleanup.push(() => up.close());
    const gw = await gatewayFor({
      endpoints: [up.url],
      bulkhead: { maxConcurrent: 1, maxQueued: 1, queueTimeout: '10s' },
    });
    const first = handshake(gw);
    await opened(first);
    let secondSettled = false;
    const second = handshake(gw);
    void second.outcome.then(() => {
      secondSettled = true;
    });
    await waitFor(async () => (await bulkhead(gw)).queued === 1);
    expect(secondSettled).toBe(false);
    expect(up.handshakes).toHaveLength(1);
    first.ws.close();
    await opened(second);
    expect(up.handshakes).toHaveLength(2);
    expect(await bulkhead(gw)).toMatchObject({ active: 1, queued: 0 });
  });
});

describe('WebSocket upgrades take the attempt stage of requests', () => {
  it('a handshake whose endpoint refuses the connection is retried on another endpoint', async () => {
    const up = await wsUpstream();
    cleanup.push(() => up.close());
    // Round robin starts on the dead endpoint, so at least one handshake needs its retry (the
    // second may too, depending on where the retry left the rotation).
    const gw = await gatewayFor({
      endpoints: ['http://127.0.0.1:1', up.url],
      balancer: { kind: 'round_robin' },
      retries: { maxAttempts: 2 },
      outlierDetection: { enabled: false },
    });
    for (let i = 0; i < 2; i++) await opened(handshake(gw));
    expect(up.handshakes).toHaveLength(2);
    await waitFor(() => gw.logs.access().filter((l) => l.status === 101).length === 2);
    expect(gw.logs.access().map((l) => l.attempts)).toContain(2);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/peregrine_upstream_attempts_total\{[^}]*outcome="connect_error"[^}]*\} [12]\n/);
  });

  it('a handshake with a body is refused with 400 before any upstream is contacted', async () => {
    const up = await wsUpstream();
    cleanup.push(() => up.close());
    const gw = await gatewayFor({ endpoints: [up.url] });
    const { raw, closedByServer } = await rawExchange(
      gw.port,
      'GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n' +
        'Content-Length: 5\r\n\r\nhello',
    );
    expect(parseHead(raw).status).toBe(400);
    expect(raw).toContain('a WebSocket handshake has no body');
    expect(closedByServer).toBe(true);
    expect(up.handshakes).toHaveLength(0);
  });
});

describe('WebSocket upgrades are traced like requests', () => {
  it('a handshake has a SERVER span and a CLIENT attempt span; the upstream gets its traceparent; the access line its trace id', async () => {
    const up = await wsUpstream();
    cleanup.push(() => up.close());
    const spans = new InMemorySpanExporter();
    const gw = await gatewayFor({ endpoints: [up.url] }, { spans });
    const parentTrace = '4bf92f3577b34da6a3ce929d0e0e4736';
    const h = handshake(gw, '/chat?room=1', { traceparent: `00-${parentTrace}-00f067aa0ba902b7-01` });
    await opened(h);
    const reply = new Promise<string>((r) => h.ws.once('message', (m) => r(m.toString())));
    h.ws.send('hi');
    expect(await reply).toBe('echo:hi');

    await waitFor(
      () => spans.getFinishedSpans().filter((s) => s.spanContext().traceId === parentTrace).length >= 2,
    );
    const ofTrace = spans.getFinishedSpans().filter((s) => s.spanContext().traceId === parentTrace);
    const server = ofTrace.find((s) => s.kind === 1)!; // SpanKind.SERVER
    const client = ofTrace.find((s) => s.kind === 2)!; // SpanKind.CLIENT
    expect(server.name).toBe('GET /*');
    expect(server.attributes).toMatchObject({ 'http.route': '/*', 'peregrine.route': 'ws' });
    expect(server.attributes['http.response.status_code']).toBe(101);
    expect(client.parentSpanContext?.spanId).toBe(server.spanContext().spanId);
    expect(client.attributes['peer.service']).toBe('u');
    expect(client.attributes['http.response.status_code']).toBe(101);

    const seen = up.handshakes[0]!;
    const tp = String(seen.headers.traceparent).split('-');
    expect(tp[1]).toBe(parentTrace);
    expect(tp[2]).toBe(client.spanContext().spanId);
    expect(seen.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);

    await waitFor(() => gw.logs.access().some((l) => l.trace_id === parentTrace));
    const line = gw.logs.access().find((l) => l.trace_id === parentTrace)!;
    expect(line).toMatchObject({
      route: 'ws',
      upstream: 'u',
      status: 101,
      path: '/chat',
      attempts: 1,
      span_id: server.spanContext().spanId,
      trace_flags: '01',
      requestId: seen.headers['x-request-id'],
    });
  });

  it('a handshake refused upstream is relayed with its status and counted as rejected', async () => {
    // An upstream that is not a WebSocket server answers the handshake like any request.
    const plain = createServer((_req, res) => {
      res.writeHead(403, { 'content-type': 'text/plain' });
      res.end('no websocket here');
    });
    await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise((r) => plain.close(r)));
    const gw = await gatewayFor({ endpoints: [`http://127.0.0.1:${(plain.address() as AddressInfo).port}`] });
    const h = handshake(gw);
    const answer = await refusal(h);
    expect(answer.status).toBe(403);
    expect(answer.body).toBe('no websocket here');
    expect(answer.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    await waitFor(() => gw.logs.access().some((l) => l.route === 'ws' && l.status === 403));
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toContain('peregrine_websocket_upgrades_total{route="ws",outcome="rejected"} 1');
  });

  it("a handshake the gateway refuses carries its ids, bytes and an ERROR span like any request's refusal", async () => {
    const spans = new InMemorySpanExporter();
    // Nothing listens on port 1 and there is no retry: 502 UPSTREAM_CONNECT_FAILED.
    const gw = await gatewayFor(
      {
        endpoints: ['http://127.0.0.1:1'],
        retries: { maxAttempts: 1 },
        outlierDetection: { enabled: false },
      },
      { spans },
    );
    const answer = await refusal(handshake(gw));
    expect(answer.status).toBe(502);
    const problem = JSON.parse(answer.body) as { code: string; requestId: string; traceId: string };
    expect(problem.code).toBe('UPSTREAM_CONNECT_FAILED');
    expect(problem.requestId).toBe(answer.headers['x-request-id']);
    await waitFor(() => gw.logs.access().some((l) => l.requestId === problem.requestId));
    const line = gw.logs.access().find((l) => l.requestId === problem.requestId)!;
    expect(line).toMatchObject({
      status: 502,
      code: 'UPSTREAM_CONNECT_FAILED',
      trace_id: problem.traceId,
      responseBytes: Buffer.byteLength(answer.body),
    });
    await waitFor(() =>
      spans.getFinishedSpans().some((s) => s.spanContext().traceId === problem.traceId && s.kind === 1),
    );
    const server = spans
      .getFinishedSpans()
      .find((s) => s.spanContext().traceId === problem.traceId && s.kind === 1)!;
    expect(server.status.code).toBe(2); // SpanStatusCode.ERROR
    expect(server.attributes['error.type']).toBe('UPSTREAM_CONNECT_FAILED');
  });
});

describe('WebSocket tunnels on shutdown', () => {
  const closed = (ws: Handshake['ws']) =>
    ws.readyState === ws.CLOSED ? Promise.resolve() : new Promise<void>((r) => ws.once('close', () => r()));
  const drainTimedOut = (gw: TestGateway) =>
    gw.logs.lines().some((l) => l.msg === 'drain timeout reached; closing remaining connections');

  it('a drain waits for an open tunnel, which keeps carrying messages, and cuts it at the drain timeout', async () => {
    const up = await wsUpstream();
    cleanup.push(() => up.close());
    const gw = await gatewayFor({ endpoints: [up.url] });
    const h = handshake(gw);
    await opened(h);

    let stopped = false;
    const stopping = gw.gateway.shutdown(800).then(() => {
      stopped = true;
    });
    const reply = new Promise<string>((r) => h.ws.once('message', (m) => r(m.toString())));
    h.ws.send('still there');
    expect(await reply).toBe('echo:still there');
    expect(stopped).toBe(false);

    await stopping;
    expect(drainTimedOut(gw)).toBe(true);
    await closed(h.ws);
    await waitFor(() => up.sockets.length === 1 && up.sockets[0]!.readyState === up.sockets[0]!.CLOSED);
  });

  it('a tunnel its client closes during the drain lets the shutdown finish without waiting for the timeout', async () => {
    const up = await wsUpstream();
    cleanup.push(() => up.close());
    const gw = await gatewayFor({ endpoints: [up.url] });
    const h = handshake(gw);
    await opened(h);

    const stopping = gw.gateway.shutdown(60_000);
    const reply = new Promise<string>((r) => h.ws.once('message', (m) => r(m.toString())));
    h.ws.send('bye');
    expect(await reply).toBe('echo:bye');
    h.ws.close();
    await stopping;
    expect(drainTimedOut(gw)).toBe(false);
    expect(gw.logs.lines().some((l) => l.msg === 'stopped')).toBe(true);
  });
});
