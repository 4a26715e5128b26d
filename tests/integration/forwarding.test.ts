import { request as httpRequest } from 'node:http';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { parseHead, rawRequest } from '../helpers/raw-http.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let up: TestUpstream;
let gw: TestGateway;

beforeAll(async () => {
  up = await startUpstream();
  gw = await startGateway({
    upstreams: {
      echo: { endpoints: [up.url], timeouts: { response: '300ms', idle: '300ms', request: '5s' } },
      dead: { endpoints: ['http://127.0.0.1:1'] },
    },
    routes: [
      { name: 'dead', match: { path: '/dead' }, upstream: 'dead' },
      { name: 'rewritten', match: { path: '/api' }, upstream: 'echo', rewrite: { stripPrefix: '/api' } },
      { name: 'echo', match: { path: '/' }, upstream: 'echo' },
    ],
  });
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
});

function lastSeen() {
  return up.requests[up.requests.length - 1]!;
}

describe('forwarding', () => {
  it('proxies a GET and sets forwarding headers', async () => {
    const res = await fetch(`${gw.url}/hello?x=1`, { headers: { 'x-custom': 'yes' } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { url: string; headers: Record<string, string> };
    expect(body.url).toBe('/hello?x=1');
    expect(body.headers['x-custom']).toBe('yes');
    expect(body.headers.host).toBe(`127.0.0.1:${gw.port}`);
    expect(body.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(body.headers['x-forwarded-proto']).toBe('http');
    expect(body.headers['x-forwarded-host']).toBe(`127.0.0.1:${gw.port}`);
    expect(body.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.headers.get('x-request-id')).toBe(body.headers['x-request-id']);
    expect(body.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
  });

  it('rewrites the path with stripPrefix and keeps the query', async () => {
    const res = await fetch(`${gw.url}/api/users/7?q=a`);
    const body = (await res.json()) as { url: string };
    expect(body.url).toBe('/users/7?q=a');
  });

  it('removes hop-by-hop request headers, including those named by Connection', async () => {
    const raw = await rawRequest(
      gw.port,
      'GET /hop HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, X-Secret-Hop\r\nX-Secret-Hop: 1\r\n' +
        'Keep-Alive: timeout=5\r\nTE: gzip\r\nProxy-Authorization: Basic Zm9v\r\nProxy-Connection: keep-alive\r\n' +
        'Upgrade: h2c\r\nTrailer: X-T\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.test\r\n' +
        'X-Forwarded-Proto: https\r\nForwarded: for=6.6.6.6\r\nX-Kept: yes\r\nConnection: close\r\n\r\n',
    );
    expect(parseHead(raw).status).toBe(200);
    const names = lastSeen()
      .rawHeaders.filter((_, i) => i % 2 === 0)
      .map((n) => n.toLowerCase());
    for (const h of [
      'x-secret-hop',
      'keep-alive',
      'te',
      'proxy-authorization',
      'proxy-connection',
      'upgrade',
      'trailer',
      'forwarded',
    ]) {
      expect(names).not.toContain(h);
    }
    expect(names).toContain('x-kept');
    const seen = lastSeen().headers;
    expect(seen['x-forwarded-for']).toBe('127.0.0.1');
    expect(seen['x-forwarded-host']).toBe('a.test');
    expect(seen['x-forwarded-proto']).toBe('http');
    // Only the header the gateway wrote, once.
    expect(names.filter((n) => n === 'x-forwarded-for')).toHaveLength(1);
  });

  it('extends X-Forwarded-* from a trusted proxy and replaces them from anyone else', async () => {
    const trusted = await startGateway({
      listeners: [{ name: 'edge', address: '127.0.0.1:0', trustedProxies: ['127.0.0.0/8'] }],
      upstreams: { u: { endpoints: [up.url] } },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    const untrusted = await startGateway({
      listeners: [{ name: 'edge', address: '127.0.0.1:0', trustedProxies: ['10.0.0.0/8', '::1'] }],
      upstreams: { u: { endpoints: [up.url] } },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    const headers = {
      'x-forwarded-for': '203.0.113.7, 198.51.100.2',
      'x-forwarded-proto': 'https',
      'x-forwarded-host': 'public.example.com',
    };
    try {
      await fetch(`${trusted.url}/xff`, { headers });
      let seen = lastSeen().headers;
      expect(seen['x-forwarded-for']).toBe('203.0.113.7, 198.51.100.2, 127.0.0.1');
      expect(seen['x-forwarded-proto']).toBe('https');
      expect(seen['x-forwarded-host']).toBe('public.example.com');

      await fetch(`${untrusted.url}/xff`, { headers });
      seen = lastSeen().headers;
      expect(seen['x-forwarded-for']).toBe('127.0.0.1');
      expect(seen['x-forwarded-proto']).toBe('http');
      expect(seen['x-forwarded-host']).toBe(`127.0.0.1:${untrusted.port}`);
    } finally {
      await trusted.close();
      await untrusted.close();
    }
  });

  it('preserves the client Host by default, or sends the endpoint host or a rewritten one per route', async () => {
    const local = await startGateway({
      upstreams: { u: { endpoints: [up.url] } },
      routes: [
        { name: 'endpoint-host', match: { path: '/eh' }, upstream: 'u', preserveHost: false },
        { name: 'rewritten-host', match: { path: '/rh' }, upstream: 'u', rewrite: { host: 'internal.svc' } },
        { name: 'preserved', match: { path: '/' }, upstream: 'u' },
      ],
    });
    try {
      await getWithHost(local.port, '/eh', 'api.example.com');
      expect(lastSeen().headers.host).toBe(`127.0.0.1:${up.port}`);
      await getWithHost(local.port, '/rh', 'api.example.com');
      expect(lastSeen().headers.host).toBe('internal.svc');
      await getWithHost(local.port, '/p', 'api.example.com');
      expect(lastSeen().headers.host).toBe('api.example.com');
      expect(lastSeen().headers['x-forwarded-host']).toBe('api.example.com');
    } finally {
      await local.close();
    }
  });

  it('keeps TE: trailers', async () => {
    await rawRequest(gw.port, 'GET /te HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n');
    expect(lastSeen().headers.te).toBe('trailers');
  });

  it('removes hop-by-hop response headers, including those named by Connection', async () => {
    const custom = await startUpstream((_req, res) => {
      res.writeHead(
        200,
        [
          ['Connection', 'X-Up-Hop'],
          ['X-Up-Hop', 'secret'],
          ['Keep-Alive', 'timeout=99'],
          ['Proxy-Authenticate', 'Basic'],
          ['Upgrade', 'h2c'],
          ['X-Up-Kept', 'yes'],
          ['Content-Length', '2'],
        ].flat() as unknown as Record<string, string>,
      );
      res.end('ok');
      return true;
    });
    const local = await startGateway({
      upstreams: { u: { endpoints: [custom.url] } },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    try {
      const raw = await rawRequest(local.port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
      const { status, headers } = parseHead(raw);
      expect(status).toBe(200);
      const names = headers.map(([n]) => n);
      expect(names).toContain('x-up-kept');
      for (const h of ['x-up-hop', 'keep-alive', 'proxy-authenticate', 'upgrade']) {
        expect(names).not.toContain(h);
      }
      expect(headers.filter(([n]) => n === 'connection').map(([, v]) => v)).toEqual(['close']);
      expect(raw.endsWith('\r\n\r\nok')).toBe(true);
    } finally {
      await local.close();
      await custom.close();
    }
  });

  it('answers 404 problem+json with the trace id when no route matches', async () => {
    const local = await startGateway({
      upstreams: { u: { endpoints: [up.url] } },
      routes: [{ name: 'only', match: { path: '/only', pathType: 'exact' }, upstream: 'u' }],
    });
    try {
      const res = await fetch(`${local.url}/nope`);
      expect(res.status).toBe(404);
      expect(res.headers.get('content-type')).toBe('application/problem+json');
      expect(res.headers.get('x-peregrine-reason')).toBe('ROUTE_NOT_FOUND');
      const problem = (await res.json()) as Record<string, unknown>;
      expect(problem).toMatchObject({ status: 404, code: 'ROUTE_NOT_FOUND' });
      expect(problem.traceId).toMatch(/^[0-9a-f]{32}$/);
      expect(problem.requestId).toBe(res.headers.get('x-request-id'));
    } finally {
      await local.close();
    }
  });

  it('names the cause in a configurable reason header, or leaves it out', async () => {
    const custom = await startGateway({
      listeners: [{ name: 'edge', address: '127.0.0.1:0', reasonHeader: 'x-gateway-cause' }],
      routes: [],
    });
    const hidden = await startGateway({
      listeners: [{ name: 'edge', address: '127.0.0.1:0', reasonHeader: false }],
      routes: [],
    });
    try {
      const a = await fetch(`${custom.url}/x`);
      expect(a.headers.get('x-gateway-cause')).toBe('ROUTE_NOT_FOUND');
      expect(a.headers.get('x-peregrine-reason')).toBeNull();
      const b = await fetch(`${hidden.url}/x`);
      expect(b.status).toBe(404);
      expect(b.headers.get('x-peregrine-reason')).toBeNull();
      expect(((await b.json()) as { code: string }).code).toBe('ROUTE_NOT_FOUND');
      // Parser-level refusals follow the same setting.
      const raw = await rawRequest(custom.port, 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nX A: 1\r\n\r\n');
      expect(raw.toLowerCase()).toContain('x-gateway-cause: bad_request');
    } finally {
      await custom.close();
      await hidden.close();
    }
  });

  it('maps a refused connection to 502 UPSTREAM_CONNECT_FAILED', async () => {
    const res = await fetch(`${gw.url}/dead`);
    expect(res.status).toBe(502);
    expect(((await res.json()) as { code: string }).code).toBe('UPSTREAM_CONNECT_FAILED');
  });

  it('maps a slow upstream to 504 UPSTREAM_TIMEOUT at the response timeout', async () => {
    const before = up.requests.length;
    const t0 = performance.now();
    const res = await fetch(`${gw.url}/delay/3000`);
    const elapsed = performance.now() - t0;
    expect(res.status).toBe(504);
    expect(((await res.json()) as { code: string }).code).toBe('UPSTREAM_TIMEOUT');
    // 300 ms configured: well before the upstream's 3 s, and not on a coarse 1 s clock.
    expect(elapsed).toBeGreaterThanOrEqual(290);
    expect(elapsed).toBeLessThan(900);
    expect(up.requests.length).toBe(before + 1);
  });

  it('aborts the client response when the body goes idle past the idle timeout', async () => {
    const res = await fetch(`${gw.url}/slow-body/2000`);
    const headAt = performance.now();
    expect(res.status).toBe(200);
    await expect(res.text()).rejects.toThrow();
    const elapsed = performance.now() - headAt;
    // 300 ms configured: well before the upstream's 2 s, and not on a coarse 1 s clock.
    expect(elapsed).toBeGreaterThanOrEqual(250);
    expect(elapsed).toBeLessThan(900);
    await expectAccessLog((l) => l.path === '/slow-body/2000' && l.code === 'UPSTREAM_BODY_TIMEOUT');
  });

  it('restarts the idle timeout at every body chunk: a slow but steady body completes', async () => {
    const trickle = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      let n = 0;
      const tick = setInterval(() => {
        res.write(`chunk ${n}\n`);
        if (++n === 8) {
          clearInterval(tick);
          res.end();
        }
      }, 100);
      return true;
    });
    const local = await startGateway({
      upstreams: { u: { endpoints: [trickle.url], timeouts: { idle: '250ms' } } },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    try {
      // 800 ms in all, more than three idle timeouts, but never 250 ms without a chunk.
      const res = await fetch(`${local.url}/trickle`);
      expect(await res.text()).toBe(Array.from({ length: 8 }, (_, i) => `chunk ${i}\n`).join(''));
    } finally {
      await local.close();
      await trickle.close();
    }
  });

  it('does not count a client that holds the body back against the upstream idle timeout', async () => {
    const size = 8 * 1024 * 1024;
    const producer = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-length': size });
      res.end(Buffer.alloc(size, 0x62));
      return true;
    });
    const local = await startGateway({
      upstreams: { u: { endpoints: [producer.url], timeouts: { idle: '200ms' } } },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    try {
      let received = 0;
      await new Promise<void>((resolve, reject) => {
        const req = httpRequest(`${local.url}/held`, (res) => {
          let held = false;
          res.on('data', (c: Buffer) => {
            received += c.length;
            if (!held) {
              held = true;
              // Four idle timeouts long: the gateway pauses the upstream meanwhile, and that
              // silence is not the upstream's.
              res.pause();
              setTimeout(() => res.resume(), 800);
            }
          });
          res.on('end', resolve);
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end();
      });
      expect(received).toBe(size);
      await waitFor(() => local.logs.access().some((l) => l.path === '/held'));
      expect(local.logs.access().find((l) => l.path === '/held')).toMatchObject({
        status: 200,
        responseBytes: size,
      });
      expect(local.logs.access().find((l) => l.path === '/held')?.code).toBeUndefined();
    } finally {
      await local.close();
      await producer.close();
    }
  });

  it('aborts the client connection when the upstream dies mid-body', async () => {
    const res = await fetch(`${gw.url}/cut/100000`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe('200000');
    await expect(res.arrayBuffer()).rejects.toThrow();
    await expectAccessLog((l) => l.path === '/cut/100000' && l.code === 'UPSTREAM_RESET');
  });

  it('aborts a chunked client response when the upstream dies mid-body (no terminal chunk)', async () => {
    const custom = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('partial', () => setTimeout(() => res.socket?.destroy(), 20));
      return true;
    });
    const local = await startGateway({
      upstreams: { u: { endpoints: [custom.url] } },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    try {
      const raw = await rawRequest(local.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n');
      expect(raw.toLowerCase()).toContain('transfer-encoding: chunked');
      expect(raw).toContain('partial');
      expect(raw.endsWith('0\r\n\r\n')).toBe(false);
    } finally {
      await local.close();
      await custom.close();
    }
  });

  it('cancels the upstream request when the client disconnects', async () => {
    const before = up.requests.length;
    const ac = new AbortController();
    const pending = fetch(`${gw.url}/hang`, { signal: ac.signal }).catch((e: unknown) => e);
    await waitFor(() => up.requests.length > before);
    ac.abort();
    await pending;
    await waitFor(() => up.requests[before]!.aborted);
    expect(up.requests[before]!.aborted).toBe(true);
    await expectAccessLog((l) => l.path === '/hang' && l.code === 'CLIENT_CLOSED' && l.status === 499);
  });

  it('rejects CL+TE and duplicate Content-Length with 400 before any upstream sees them', async () => {
    const before = up.requests.length;
    const cases = [
      'POST /smuggle HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'POST /smuggle HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n',
      'POST /smuggle HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde',
      'POST /smuggle HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd',
      'GET /dup-host HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n',
    ];
    for (const payload of cases) {
      const raw = await rawRequest(gw.port, payload);
      expect(parseHead(raw).status, payload).toBe(400);
    }
    expect(up.requests.length).toBe(before);
    // Parser-level rejections are still requests in the telemetry: counted and logged.
    await expectAccessLog((l) => l.code === 'BAD_REQUEST' && l.status === 400 && l.method === '-');
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/peregrine_requests_total\{[^}]*route="_none"[^}]*status="400"[^}]*\} [4-9]/);
  });

  it('rejects an encoded-slash traversal with 400', async () => {
    const raw = await rawRequest(
      gw.port,
      'GET /pub/..%2Fadmin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    );
    expect(parseHead(raw).status).toBe(400);
  });

  it('streams a 50 MB download with backpressure: a stalled client stalls the upstream', async () => {
    const size = 50 * 1024 * 1024;
    let sent = 0;
    const producer = await startUpstream((_req, res) => {
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      res.writeHead(200, { 'content-length': size });
      const pump = (): void => {
        while (sent < size) {
          sent += chunk.length;
          if (!res.write(chunk)) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
      return true;
    });
    const local = await startGateway({
      upstreams: { u: { endpoints: [producer.url] } },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    try {
      let received = 0;
      let gapWhileStalled = 0;
      await new Promise<void>((resolve, reject) => {
        const req = httpRequest(`${local.url}/big`, (res) => {
          let stalled = false;
          res.on('data', (c: Buffer) => {
            received += c.length;
            if (!stalled && received >= 4 * 1024 * 1024) {
              stalled = true;
              res.pause();
              // Let every buffer on the way fill up, then see how far the upstream got ahead.
              setTimeout(() => {
                gapWhileStalled = sent - received;
                res.resume();
              }, 1000);
            }
          });
          res.on('end', resolve);
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end();
      });
      expect(received).toBe(size);
      // A buffering proxy would have read the whole body from the upstream (gap ≈ 46 MB). Streaming
      // leaves only socket and stream buffers (a few MB on loopback) between the two.
      expect(gapWhileStalled).toBeGreaterThan(0);
      expect(gapWhileStalled).toBeLessThan(20 * 1024 * 1024);
    } finally {
      await local.close();
      await producer.close();
    }
  });

  it('streams a 50 MB upload with backpressure: a stalled upstream stalls the client', async () => {
    const size = 50 * 1024 * 1024;
    let upstreamReceived = 0;
    let gapWhileStalled = 0;
    let clientSent = 0;
    const consumer = await startUpstream((req, res) => {
      let stalled = false;
      req.on('data', (c: Buffer) => {
        upstreamReceived += c.length;
        if (!stalled && upstreamReceived >= 4 * 1024 * 1024) {
          stalled = true;
          req.pause();
          setTimeout(() => {
            gapWhileStalled = clientSent - upstreamReceived;
            req.resume();
          }, 1000);
        }
      });
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ bytes: upstreamReceived }));
      });
      return true;
    });
    const local = await startGateway({
      upstreams: { u: { endpoints: [consumer.url] } },
      routes: [{ name: 'r', upstream: 'u' }],
    });
    try {
      const chunk = Buffer.alloc(64 * 1024, 0x7a);
      const source = new Readable({
        highWaterMark: 64 * 1024,
        read() {
          if (clientSent >= size) return this.push(null);
          clientSent += chunk.length;
          this.push(chunk);
        },
      });
      const upload = await new Promise<{ bytes: number }>((resolve, reject) => {
        const req = httpRequest(
          `${local.url}/upload`,
          { method: 'POST', headers: { 'content-length': size } },
          (res) => {
            let text = '';
            res.on('data', (c: Buffer) => {
              text += c.toString();
            });
            res.on('end', () => resolve(JSON.parse(text) as { bytes: number }));
          },
        );
        req.on('error', reject);
        source.pipe(req);
      });
      expect(upload.bytes).toBe(size);
      expect(gapWhileStalled).toBeGreaterThan(0);
      expect(gapWhileStalled).toBeLessThan(20 * 1024 * 1024);
      await waitFor(() => local.logs.access().some((l) => l.path === '/upload' && l.requestBytes === size));
    } finally {
      await local.close();
      await consumer.close();
    }
  });

  it('proxies a WebSocket upgrade end to end', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((r) => wss.once('listening', r));
    wss.on('connection', (sock, req) => {
      sock.on('message', (m) => sock.send(`echo:${m.toString()}:${req.url}`));
    });
    const port = (wss.address() as { port: number }).port;
    const local = await startGateway({
      upstreams: { ws: { endpoints: [`http://127.0.0.1:${port}`] } },
      routes: [{ name: 'ws', match: { path: '/ws' }, upstream: 'ws' }],
    });
    try {
      const client = new WebSocket(`ws://127.0.0.1:${local.port}/ws/chat?room=1`);
      await new Promise((resolve, reject) => {
        client.once('open', resolve);
        client.once('error', reject);
      });
      const reply = new Promise<string>((resolve) => client.once('message', (m) => resolve(m.toString())));
      client.send('hi');
      expect(await reply).toBe('echo:hi:/ws/chat?room=1');
      client.close();
      // A WebSocket handshake to a path without a route is refused cleanly.
      const refused = new WebSocket(`ws://127.0.0.1:${local.port}/nope`);
      const status = await new Promise<number>((resolve) =>
        refused.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)),
      );
      expect(status).toBe(404);
      await waitFor(() => local.logs.access().some((l) => l.route === 'ws' && l.status === 101));
      await waitFor(() =>
        local.logs.access().some((l) => l.path === '/nope' && l.code === 'ROUTE_NOT_FOUND'),
      );
      const metrics = await (await fetch(`${local.adminUrl}/metrics`)).text();
      expect(metrics).toContain('peregrine_websocket_upgrades_total{route="ws",outcome="success"} 1');
    } finally {
      await local.close();
      await new Promise((r) => wss.close(r));
    }
  });
});

describe('WebSocket peers that misbehave', () => {
  it('an abrupt end on either side closes the other; garbage frames pass through; the gateway keeps serving', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((r) => wss.once('listening', r));
    const upstreamSockets: import('ws').WebSocket[] = [];
    const upstreamClosed: number[] = [];
    wss.on('connection', (sock) => {
      const i = upstreamSockets.push(sock) - 1;
      sock.on('close', () => upstreamClosed.push(i));
      sock.on('error', () => {});
      sock.on('message', (m) => sock.send(`echo:${m.toString()}`));
    });
    const port = (wss.address() as { port: number }).port;
    const local = await startGateway({
      upstreams: { ws: { endpoints: [`http://127.0.0.1:${port}`] } },
      routes: [{ name: 'ws', match: { path: '/ws' }, upstream: 'ws' }],
    });
    const open = async (): Promise<WebSocket> => {
      const c = new WebSocket(`ws://127.0.0.1:${local.port}/ws`);
      c.on('error', () => {});
      await new Promise((resolve, reject) => {
        c.once('open', resolve);
        c.once('unexpected-response', () => reject(new Error('handshake refused')));
      });
      return c;
    };
    try {
      // 1. The client's TCP connection is cut mid-conversation: the upstream side is closed.
      const a = await open();
      a.send('one');
      await new Promise((r) => a.once('message', r));
      (a as unknown as { _socket: import('node:net').Socket })._socket.destroy();
      await waitFor(() => upstreamClosed.includes(0));

      // 2. The upstream's connection is cut: the client side is closed.
      const b = await open();
      await waitFor(() => upstreamSockets.length === 2);
      const bClosed = new Promise<number>((resolve) => b.once('close', (code) => resolve(code)));
      upstreamSockets[1]!.terminate();
      expect(await bClosed).toBe(1006);

      // 3. Bytes that are not a valid frame reach the upstream, whose WebSocket library rejects
      //    them and closes; the gateway only relays and closes the client side after it.
      const c = await open();
      await waitFor(() => upstreamSockets.length === 3);
      const cClosed = new Promise<void>((resolve) => c.once('close', () => resolve()));
      (c as unknown as { _socket: import('node:net').Socket })._socket.write(
        Buffer.from([0xff, 0xff, 0xff, 0xff]),
      );
      await cClosed;
      await waitFor(() => upstreamClosed.includes(2));

      // The gateway is unharmed: a new conversation works.
      const d = await open();
      const reply = new Promise<string>((resolve) => d.once('message', (m) => resolve(m.toString())));
      d.send('still here');
      expect(await reply).toBe('echo:still here');
      d.close();
    } finally {
      await local.close();
      await new Promise((r) => wss.close(r));
    }
  });
});

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function expectAccessLog(pred: (l: Record<string, unknown>) => boolean): Promise<void> {
  await waitFor(() => gw.logs.access().some(pred));
}

function getWithHost(port: number, path: string, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers: { host }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}
