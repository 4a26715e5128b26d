/**
 * Upstream failures through the whole gateway: real upstreams that misbehave on command, exact
 * counters on the upstream side.
 */
import { request as httpRequest } from 'node:http';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterEach, describe, expect, it } from 'vitest';
import { startFullBacklog } from '../helpers/full-backlog.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const opened: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.close();
});

async function upstream(handler?: Parameters<typeof startUpstream>[0]): Promise<TestUpstream> {
  const u = await startUpstream(handler);
  opened.push(u);
  return u;
}

async function gateway(
  input: Parameters<typeof startGateway>[0],
  opts?: Parameters<typeof startGateway>[1],
): Promise<TestGateway> {
  const g = await startGateway(input, opts);
  opened.push(g);
  return g;
}

function post(url: string, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      { method: 'POST', headers: { 'content-length': Buffer.byteLength(body) }, agent: false },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** An upstream that accepts the request and then resets the connection without answering. */
const resetAfterRequest: Parameters<typeof startUpstream>[0] = (req) => {
  req.resume();
  req.on('end', () => req.socket.destroy());
  return true;
};

describe('retries', () => {
  it('retries a GET reset by one endpoint on another endpoint, without steering later first attempts', async () => {
    const bad = await upstream(resetAfterRequest);
    const good = await upstream();
    const gw = await gateway({
      upstreams: {
        u: {
          endpoints: [bad.url, good.url],
          balancer: { kind: 'round_robin' },
          // This test is about where a retry goes; the budget and ejection have their own tests.
          retries: { budget: { minRetriesPerSecond: 100 } },
          outlierDetection: { enabled: false },
        } as never,
      },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    for (let i = 0; i < 12; i++) expect((await fetch(`${gw.url}/get/${i}`)).status).toBe(200);
    // A sequential client's first attempts alternate; the six on the bad endpoint are retried on
    // the good one. Were retries to advance the shared rotation, all twelve would start on the bad one.
    expect(bad.requests).toHaveLength(6);
    expect(good.requests).toHaveLength(12);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/peregrine_upstream_retries_total\{[^}]*upstream="u"[^}]*\} [1-9]/);
  });

  it('never sends a POST twice after the upstream received it (reset after send)', async () => {
    const bad = await upstream(resetAfterRequest);
    const good = await upstream();
    const gw = await gateway({
      upstreams: { u: { endpoints: [bad.url, good.url], balancer: { kind: 'round_robin' } } as never },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push(await post(`${gw.url}/order/${i}`, `{"n":${i}}`));
    // Every POST reached an upstream exactly once in total.
    const seen = [...bad.requests, ...good.requests].map((r) => r.url).sort();
    expect(seen).toEqual([0, 1, 2, 3, 4, 5].map((i) => `/order/${i}`).sort());
    expect(statuses.filter((s) => s === 502).length).toBe(bad.requests.length);
  });

  it('retries a POST refused before any byte was sent, with its buffered body', async () => {
    const good = await upstream();
    const gw = await gateway({
      upstreams: {
        u: {
          endpoints: ['http://127.0.0.1:1', good.url],
          balancer: { kind: 'round_robin' },
          retries: { budget: { minRetriesPerSecond: 100 } },
        } as never,
      },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    for (let i = 0; i < 4; i++) expect(await post(`${gw.url}/echo-body`, `payload-${i}`)).toBe(200);
    expect(good.requests).toHaveLength(4);
  });

  it('retries a listed status on another endpoint and honours max attempts', async () => {
    const unavailable = await upstream((_req, res) => {
      res.writeHead(503, { 'content-type': 'text/plain' });
      res.end('busy');
      return true;
    });
    const good = await upstream();
    const gw = await gateway({
      upstreams: {
        u: {
          endpoints: [unavailable.url, good.url],
          balancer: { kind: 'round_robin' },
          retries: { statuses: [503], budget: { minRetriesPerSecond: 100 } },
          circuitBreaker: { enabled: false },
          outlierDetection: { enabled: false },
        } as never,
      },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    for (let i = 0; i < 4; i++) expect((await fetch(`${gw.url}/s/${i}`)).status).toBe(200);
    expect(good.requests).toHaveLength(4);
  });

  it('waits for the upstream Retry-After before retrying, within the total timeout', async () => {
    let calls = 0;
    const times: number[] = [];
    const flaky = await upstream((_req, res) => {
      times.push(Date.now());
      if (calls++ === 0) {
        res.writeHead(503, { 'retry-after': '1' });
        res.end();
      } else res.end('ok');
      return true;
    });
    const gw = await gateway({
      upstreams: {
        u: {
          endpoints: [flaky.url],
          retries: { statuses: [503], maxRetryAfter: '3s' },
          circuitBreaker: { enabled: false },
          outlierDetection: { enabled: false },
        } as never,
      },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    const res = await fetch(`${gw.url}/ra`);
    expect(res.status).toBe(200);
    expect(times).toHaveLength(2);
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(950);

    // A Retry-After beyond what the policy accepts is not waited for: the 503 goes to the client.
    calls = 0;
    times.length = 0;
    const strict = await gateway({
      upstreams: {
        u: {
          endpoints: [flaky.url],
          retries: { statuses: [503], maxRetryAfter: '500ms' },
          circuitBreaker: { enabled: false },
          outlierDetection: { enabled: false },
        } as never,
      },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    const refused = await fetch(`${strict.url}/ra`);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(times).toHaveLength(1);
  });

  it('does not amplify a full outage: attempts stay within the retry budget', async () => {
    const down = await upstream((_req, res) => {
      res.writeHead(503);
      res.end();
      return true;
    });
    const gw = await gateway({
      upstreams: {
        u: {
          endpoints: [down.url],
          retries: {
            maxAttempts: 3,
            statuses: [503],
            budget: { ratio: 0.2, minRetriesPerSecond: 1, window: '10s' },
            backoff: { base: '1ms', max: '2ms' },
          },
          circuitBreaker: { enabled: false },
          outlierDetection: { enabled: false },
        } as never,
      },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    const started = Date.now();
    const requests = 100;
    for (let i = 0; i < requests; i += 10) {
      await Promise.all(
        Array.from({ length: 10 }, (_, j) => fetch(`${gw.url}/x/${i + j}`).then((r) => r.arrayBuffer())),
      );
    }
    const seconds = Math.ceil((Date.now() - started) / 1000) + 10;
    // ratio × requests + the floor for every second the window could have credited.
    expect(down.requests.length).toBeLessThanOrEqual(requests * 1.2 + seconds);
    expect(down.requests.length).toBeGreaterThanOrEqual(requests);
  });
});

describe('circuit breaker', () => {
  it('opens after consecutive failures and answers 503 CIRCUIT_OPEN with Retry-After without calling the upstream', async () => {
    const failing = await upstream((_req, res) => {
      res.writeHead(503);
      res.end();
      return true;
    });
    const spans = new InMemorySpanExporter();
    const gw = await gateway(
      {
        telemetry: { tracing: { sampleRatio: 1 } },
        upstreams: {
          u: {
            endpoints: [failing.url],
            retries: { maxAttempts: 1 },
            circuitBreaker: { consecutiveFailures: 3, openDuration: '30s' },
            outlierDetection: { enabled: false },
          } as never,
        },
        routes: [{ name: 'r', upstream: 'u' }],
      },
      { spanProcessor: new SimpleSpanProcessor(spans) },
    );
    for (let i = 0; i < 3; i++) expect((await fetch(`${gw.url}/f`)).status).toBe(503);
    const before = failing.requests.length;
    const res = await fetch(`${gw.url}/f`);
    expect(res.status).toBe(503);
    expect(res.headers.get('x-peregrine-reason')).toBe('CIRCUIT_OPEN');
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await res.json()) as { code: string }).code).toBe('CIRCUIT_OPEN');
    expect(failing.requests.length).toBe(before);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/peregrine_upstream_circuit_state\{upstream="u"\} 1/);
    const upstreams = (await (await fetch(`${gw.adminUrl}/v1/upstreams`)).json()) as { upstreams: unknown[] };
    expect(JSON.stringify(upstreams)).toContain('open');
    expect(gw.logs.lines().some((l) => /circuit/i.test(String(l.msg)))).toBe(true);
    // The request whose failure tripped the breaker carries the transition on its span.
    const tripped = spans
      .getFinishedSpans()
      .flatMap((sp) => sp.events)
      .filter((e) => e.name === 'peregrine.circuit_transition');
    expect(tripped).toHaveLength(1);
    expect(tripped[0]!.attributes).toMatchObject({ from: 'closed', to: 'open' });
  });

  it('does not send a retry whose backoff ended after the breaker opened', async () => {
    // Every answer is a retryable 503 asking for a 1 s wait: a retry decided while the circuit was
    // closed waits long enough for another request to trip it.
    const failing = await upstream((_req, res) => {
      res.writeHead(503, { 'retry-after': '1' });
      res.end();
      return true;
    });
    const gw = await gateway({
      upstreams: {
        u: {
          endpoints: [failing.url],
          retries: { statuses: [503], budget: { minRetriesPerSecond: 100 } },
          circuitBreaker: { consecutiveFailures: 2, openDuration: '30s' },
          outlierDetection: { enabled: false },
        } as never,
      },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    const first = fetch(`${gw.url}/a`);
    for (let i = 0; i < 200 && failing.requests.length === 0; i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(failing.requests).toHaveLength(1);
    // The second failure opens the circuit. Both requests had a retry scheduled (the retry is
    // decided on the response head, before the attempt's result reaches the breaker); when each
    // backoff ends the circuit is open, so neither retry is sent.
    const second = await fetch(`${gw.url}/b`);
    const res = await first;
    for (const r of [res, second]) {
      expect([r.status, r.headers.get('x-peregrine-reason')]).toEqual([503, 'CIRCUIT_OPEN']);
    }
    expect(failing.requests).toHaveLength(2);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/peregrine_upstream_decisions_total\{upstream="u",decision="circuit_open"\} 2/);
  });
});

describe('outlier ejection', () => {
  it('ejects an endpoint that keeps timing out and moves traffic to the healthy one', async () => {
    const hanging = await upstream((_req, _res) => true);
    const good = await upstream();
    const gw = await gateway({
      upstreams: {
        u: {
          endpoints: [hanging.url, good.url],
          balancer: { kind: 'round_robin' },
          timeouts: { response: '100ms' },
          retries: { maxAttempts: 1 },
          circuitBreaker: { enabled: false },
          outlierDetection: { consecutiveGatewayErrors: 2, baseEjectionTime: '30s' },
        } as never,
      },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) statuses.push((await fetch(`${gw.url}/e/${i}`)).status);
    // Two timeouts eject the hanging endpoint; afterwards everything goes to the good one.
    expect(statuses.filter((s) => s === 504)).toHaveLength(2);
    expect(hanging.requests).toHaveLength(2);
    expect(good.requests).toHaveLength(10);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/peregrine_upstream_ejections_total\{[^}]*upstream="u"[^}]*\} 1/);
  });
});

describe('black-holed endpoint', () => {
  it('times out the connect, ejects the endpoint and moves traffic to the healthy one', async () => {
    // Accepts TCP and never answers the TLS ClientHello: the connect phase (TCP + TLS) hangs.
    const sockets = new Set<Socket>();
    const hole = createServer((s) => {
      sockets.add(s);
      s.on('error', () => {});
    });
    await new Promise<void>((r) => hole.listen(0, '127.0.0.1', r));
    opened.push({
      close: async () => {
        for (const s of sockets) s.destroy();
        await new Promise<void>((r) => hole.close(() => r()));
      },
    });
    const good = await upstream();
    const gw = await gateway({
      upstreams: {
        u: {
          endpoints: [`https://127.0.0.1:${(hole.address() as AddressInfo).port}`, good.url],
          balancer: { kind: 'round_robin' },
          timeouts: { connect: '150ms' },
          retries: { maxAttempts: 2, budget: { minRetriesPerSecond: 100 } },
          circuitBreaker: { enabled: false },
          outlierDetection: { consecutiveGatewayErrors: 2, baseEjectionTime: '30s' },
        } as never,
      },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await fetch(`${gw.url}/bh/${i}`)).status);
    // A connect timeout is retried (nothing reached the upstream), so every request succeeds.
    expect(statuses).toEqual(Array(8).fill(200));
    expect(good.requests).toHaveLength(8);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/peregrine_upstream_attempts_total\{[^}]*outcome="timeout"[^}]*\} 2/);
    expect(metrics).toMatch(/peregrine_upstream_ejections_total\{[^}]*upstream="u"[^}]*\} 1/);
    const view = (await (await fetch(`${gw.adminUrl}/v1/upstreams`)).json()) as { upstreams: unknown[] };
    expect(JSON.stringify(view)).toMatch(/"ejected":true/);
  });
});

describe('connect timeout', () => {
  it('fires on time (within tens of ms), not on the half-second clock of undici', async () => {
    // The kernel drops SYNs to a listener whose accept queue is full: the connect hangs.
    const full = await startFullBacklog();
    opened.push(full);
    const gw = await gateway({
      upstreams: {
        u: {
          endpoints: [full.url],
          timeouts: { connect: '100ms' },
          retries: { maxAttempts: 1 },
          circuitBreaker: { enabled: false },
          outlierDetection: { enabled: false },
        } as never,
      },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    const took: number[] = [];
    for (let i = 0; i < 3; i++) {
      const started = performance.now();
      const res = await fetch(`${gw.url}/c/${i}`);
      took.push(performance.now() - started);
      expect([res.status, res.headers.get('x-peregrine-reason')]).toEqual([504, 'UPSTREAM_CONNECT_TIMEOUT']);
    }
    // undici's own timer fires a 100 ms timeout after 0.5-1 s; the bound leaves room for a loaded
    // machine and still tells the two apart.
    for (const ms of took) {
      expect(ms).toBeGreaterThanOrEqual(95);
      expect(ms).toBeLessThan(400);
    }
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/peregrine_upstream_attempts_total\{[^}]*outcome="timeout",status="none"\} 3/);
  });
});

describe('bulkhead', () => {
  it('answers 503 UPSTREAM_OVERLOADED beyond max concurrent + queued', async () => {
    const slow = await upstream((_req, res) => {
      setTimeout(() => res.end('ok'), 300);
      return true;
    });
    const gw = await gateway({
      upstreams: {
        u: {
          endpoints: [slow.url],
          bulkhead: { maxConcurrent: 2, maxQueued: 1, queueTimeout: '5s' },
        } as never,
      },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    const results = await Promise.all(
      Array.from({ length: 5 }, () =>
        fetch(`${gw.url}/b`).then(async (r) => [r.status, r.headers.get('x-peregrine-reason')] as const),
      ),
    );
    expect(results.filter(([s]) => s === 200)).toHaveLength(3);
    expect(results.filter(([s, reason]) => s === 503 && reason === 'UPSTREAM_OVERLOADED')).toHaveLength(2);
    expect(slow.requests).toHaveLength(3);
  });
});
