/**
 * Pooled connections the upstream has closed while idle: real upstreams that answer the first
 * request of each connection and close the connection when the next one arrives on it, exactly
 * what a request written on a connection closed under it sees. The gateway sends such a request
 * again on a fresh connection, counts it as a stale connection, and holds nothing against the
 * endpoint (breaker closed, no failure). Over plain HTTP/1.1 (a reset), over TLS (a reset under
 * the TLS layer, or a close_notify and FIN without an answer), over HTTP/2 (the socket reset, or
 * GOAWAY refusing the new stream) and for a WebSocket handshake (replayed like any GET; only a
 * tunnel that has opened is never sent again). Also checked: a Peregrine listener advertises its
 * keep-alive timeout, which undici's pools stay under.
 */
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import {
  createSecureServer,
  type Http2SecureServer,
  constants as h2constants,
  type ServerHttp2Stream,
} from 'node:http2';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { createSecureContext, TLSSocket } from 'node:tls';
import { request } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import {
  type CertFiles,
  type IssuedCert,
  removeCertFiles,
  TestCa,
  writeCertFiles,
} from '../helpers/certs.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { metricValue } from '../helpers/tls-client.ts';
import { opened as tunnelOpened, wsHandshake } from '../helpers/ws-upstream.ts';

/** Listen on 127.0.0.1:0: the URL, and a close that destroys the `open()` connections first. */
async function listening(
  server: {
    listen(port: number, host: string, cb: () => void): unknown;
    address(): unknown;
    close(cb: () => void): unknown;
  },
  scheme: string,
  open: () => Iterable<Socket>,
): Promise<{ url: string; close(): Promise<void> }> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `${scheme}://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open()) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** `n` GETs through the gateway one after another, each answered 200 `ok`. */
async function expectAnswered(gw: TestGateway, n = 5): Promise<void> {
  for (let i = 0; i < n; i++) {
    const res = await request(`${gw.url}/get/${i}`);
    expect(res.statusCode, `request ${i + 1}`).toBe(200);
    expect(await res.body.text()).toBe('ok');
  }
}

interface ClosingUpstream {
  url: string;
  /** Connections accepted, and requests answered. */
  connections: number;
  answered: number;
  /** Requests whose connection was closed as they arrived. */
  reset: number;
  close(): Promise<void>;
}

/**
 * How the upstream closes a connection when its second request arrives: `reset` (TCP RST, under
 * TLS when there is TLS), or `close_notify` (TLS: a close_notify alert and FIN, no answer).
 */
type Closing = 'reset' | 'close_notify';

/**
 * One answer per connection: 200 with keep-alive (no Keep-Alive hint), then the connection closed
 * on the next request. With `tls`, the same behind a TLS server (ALPN http/1.1).
 */
async function closingUpstream(
  tls?: { readonly cert: string; readonly key: string },
  closing: Closing = 'reset',
): Promise<ClosingUpstream> {
  const sockets = new Set<Socket>();
  const up = { url: '', connections: 0, answered: 0, reset: 0 } as ClosingUpstream;
  const context = tls === undefined ? undefined : createSecureContext({ cert: tls.cert, key: tls.key });
  const server: Server = createServer((raw) => {
    up.connections += 1;
    sockets.add(raw);
    raw.on('close', () => sockets.delete(raw));
    raw.on('error', () => undefined);
    const socket =
      context === undefined
        ? raw
        : new TLSSocket(raw, { isServer: true, secureContext: context, ALPNProtocols: ['http/1.1'] });
    socket.on('error', () => undefined);
    let head = '';
    let served = false;
    socket.on('data', (chunk: Buffer) => {
      if (served) {
        up.reset += 1;
        if (closing === 'reset') raw.resetAndDestroy();
        else socket.end();
        return;
      }
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      served = true;
      up.answered += 1;
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    });
  });
  Object.assign(up, await listening(server, tls === undefined ? 'http' : 'https', () => sockets));
  return up;
}

const opened: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.close();
});

async function gatewayTo(
  up: { readonly url: string },
  retries: Record<string, unknown> = {},
  transport: Record<string, unknown> = {},
): Promise<TestGateway> {
  const gw = await startGateway({
    upstreams: {
      u: {
        endpoints: [up.url],
        retries,
        ...transport,
        // One failure counted against the endpoint would open the breaker.
        circuitBreaker: { consecutiveFailures: 1, openDuration: '60s' },
        outlierDetection: { consecutiveGatewayErrors: 1 },
      } as never,
    },
    routes: [{ name: 'r', upstream: 'u' }],
  });
  opened.push(gw);
  return gw;
}

async function metrics(gw: TestGateway): Promise<string> {
  return (await fetch(`${gw.adminUrl}/metrics`)).text();
}

describe('stale pooled connections', () => {
  it('sends a request that met a closed idle connection again on a fresh one, without a failure', async () => {
    const up = await closingUpstream();
    opened.push(up);
    // maxAttempts 1: the replay is the transport's, not a policy retry.
    const gw = await gatewayTo(up, { maxAttempts: 1 });
    await expectAnswered(gw);
    // Requests 2 and 4 met the pooled connection the one before had used and were reset; each was
    // sent again on a connection of its own (the upstream answers only a connection's first
    // request), which closed after it, so requests 3 and 5 found no idle connection.
    expect(up.reset).toBe(2);
    expect(up.answered).toBe(5);
    expect(up.connections).toBe(5);
    const text = await metrics(gw);
    expect(metricValue(text, 'peregrine_upstream_circuit_state', { upstream: 'u' })).toBe(0);
    expect(
      metricValue(text, 'peregrine_upstream_retries_total', { upstream: 'u', reason: 'stale_connection' }),
    ).toBe(2);
    expect(
      metricValue(text, 'peregrine_upstream_attempts_total', {
        upstream: 'u',
        endpoint: up.url,
        outcome: 'stale_connection',
      }),
    ).toBe(2);
    expect(
      metricValue(text, 'peregrine_upstream_attempts_total', {
        upstream: 'u',
        endpoint: up.url,
        outcome: 'reset',
      }),
    ).toBeUndefined();
  });

  it('does not send a POST whose body was written again, and still holds nothing against the endpoint', async () => {
    const up = await closingUpstream();
    opened.push(up);
    const gw = await gatewayTo(up);
    expect((await request(`${gw.url}/first`)).statusCode).toBe(200);
    const res = await request(`${gw.url}/post`, { method: 'POST', body: 'payload' });
    expect(res.statusCode).toBe(502);
    expect(((await res.body.json()) as { code: string }).code).toBe('UPSTREAM_RESET');
    expect(up.answered).toBe(1);
    const text = await metrics(gw);
    expect(metricValue(text, 'peregrine_upstream_circuit_state', { upstream: 'u' })).toBe(0);
    // The endpoint keeps taking requests.
    expect((await request(`${gw.url}/after`)).statusCode).toBe(200);
  });

  it("a Peregrine listener advertises its keep-alive timeout, and undici's pools idle below it", async () => {
    const up = await closingUpstream();
    opened.push(up);
    const gw = await gatewayTo(up);
    const res = await request(`${gw.url}/k`);
    await res.body.dump();
    // limits.keepAliveTimeout 5s: undici closes its idle connection 2 s (keepAliveTimeoutThreshold) before.
    expect(res.headers['keep-alive']).toBe('timeout=5');
  });
});

/**
 * After a run of sequential requests, each answered: `stale` of them were sent again after meeting
 * a closed pooled connection, and nothing was held against the endpoint.
 */
async function expectReplayedWithoutFailure(gw: TestGateway, endpoint: string, stale: number): Promise<void> {
  const text = await metrics(gw);
  expect(metricValue(text, 'peregrine_upstream_circuit_state', { upstream: 'u' })).toBe(0);
  expect(
    metricValue(text, 'peregrine_upstream_retries_total', { upstream: 'u', reason: 'stale_connection' }),
  ).toBe(stale);
  expect(
    metricValue(text, 'peregrine_upstream_attempts_total', {
      upstream: 'u',
      endpoint,
      outcome: 'stale_connection',
    }),
  ).toBe(stale);
  for (const outcome of ['reset', 'protocol_error', 'error'])
    expect(
      metricValue(text, 'peregrine_upstream_attempts_total', { upstream: 'u', endpoint, outcome }),
      outcome,
    ).toBeUndefined();
}

let ca: TestCa;
/** The upstreams' certificate (localhost, 127.0.0.1), and the files the gateway trusts its CA from. */
let serverCert: IssuedCert;
let certs: CertFiles;
beforeAll(async () => {
  ca = await TestCa.create();
  serverCert = await ca.server();
  certs = writeCertFiles(serverCert, ca.cert);
});
afterAll(() => removeCertFiles());

describe('stale pooled connections over TLS', () => {
  it.each<Closing>(['reset', 'close_notify'])(
    'an https:// upstream that closes an idle connection as the next request arrives (%s): sent again',
    async (closing) => {
      const up = await closingUpstream(serverCert, closing);
      opened.push(up);
      const gw = await gatewayTo(up, { maxAttempts: 1 }, { tls: { ca: certs.ca } });
      await expectAnswered(gw);
      // As over plain HTTP/1.1: requests 2 and 4 met the connection the one before had used.
      expect([up.reset, up.answered, up.connections]).toEqual([2, 5, 5]);
      await expectReplayedWithoutFailure(gw, up.url, 2);
    },
  );
});

interface H2Upstream {
  url: string;
  /** Sessions (connections) accepted, streams answered, and streams met by the session going away. */
  sessions: number;
  answered: number;
  goneAway: number;
  close(): Promise<void>;
}

/**
 * An HTTP/2 upstream (TLS, ALPN h2 only) that answers the first stream of each session and makes
 * the session go away when the next stream opens: `reset` resets its TCP connection, `goaway`
 * sends GOAWAY naming stream 1 as the last it processed (RFC 9113 §6.8: the new stream was not)
 * and closes the session.
 */
async function h2Upstream(mode: 'reset' | 'goaway'): Promise<H2Upstream> {
  const up = { url: '', sessions: 0, answered: 0, goneAway: 0 } as H2Upstream;
  const server: Http2SecureServer = createSecureServer({ cert: serverCert.cert, key: serverCert.key });
  const raw = new Map<number, Socket>();
  server.on('connection', (socket: Socket) => {
    const port = socket.remotePort!;
    raw.set(port, socket);
    socket.on('close', () => raw.delete(port));
    socket.on('error', () => undefined);
  });
  const streams = new WeakMap<object, number>();
  server.on('session', (session) => {
    up.sessions += 1;
    session.on('error', () => undefined);
  });
  server.on('stream', (stream: ServerHttp2Stream) => {
    stream.on('error', () => undefined);
    const session = stream.session!;
    const n = (streams.get(session) ?? 0) + 1;
    streams.set(session, n);
    if (n === 1) {
      up.answered += 1;
      stream.respond({ ':status': 200, 'content-length': '2' });
      stream.end('ok');
      return;
    }
    up.goneAway += 1;
    if (mode === 'reset') {
      raw.get(session.socket.remotePort!)?.resetAndDestroy();
      return;
    }
    session.goaway(h2constants.NGHTTP2_NO_ERROR, 1);
    stream.close(h2constants.NGHTTP2_REFUSED_STREAM);
    session.close();
  });
  Object.assign(up, await listening(server, 'https', () => raw.values()));
  return up;
}

describe('stale pooled connections over HTTP/2', () => {
  it('an h2 upstream whose connection is reset as the next stream opens: the request is sent again on a fresh one', async () => {
    const up = await h2Upstream('reset');
    opened.push(up);
    const gw = await gatewayTo(up, { maxAttempts: 1 }, { tls: { ca: certs.ca }, protocol: 'h2' });
    await expectAnswered(gw);
    // Requests 2 and 4 met the session the one before had used; each replay had a session of its
    // own, closed after it, so requests 3 and 5 opened new ones.
    expect([up.goneAway, up.answered, up.sessions]).toEqual([2, 5, 5]);
    await expectReplayedWithoutFailure(gw, up.url, 2);
  });

  it('an h2 upstream that sends GOAWAY as the next stream opens: the refused stream goes out again, nothing is held against it', async () => {
    const up = await h2Upstream('goaway');
    opened.push(up);
    const gw = await gatewayTo(up, { maxAttempts: 1 }, { tls: { ca: certs.ca }, protocol: 'h2' });
    await expectAnswered(gw);
    expect(up.answered).toBe(5);
    expect(up.goneAway).toBeGreaterThan(0);
    const text = await metrics(gw);
    expect(metricValue(text, 'peregrine_upstream_circuit_state', { upstream: 'u' })).toBe(0);
    for (const outcome of ['reset', 'protocol_error', 'error'])
      expect(
        metricValue(text, 'peregrine_upstream_attempts_total', { upstream: 'u', endpoint: up.url, outcome }),
        outcome,
      ).toBeUndefined();
  });
});

interface ClosingWsUpstream {
  url: string;
  connections: number;
  /** Plain requests answered, handshakes accepted (101), requests met by a reset. */
  answered: number;
  handshakes: number;
  reset: number;
  close(): Promise<void>;
}

/**
 * A real HTTP/1.1 server with WebSocket (`ws`, echo) that answers the first request of each
 * connection, plain or handshake, and resets the connection when a second one arrives on it.
 */
async function closingWsUpstream(): Promise<ClosingWsUpstream> {
  const up = { url: '', connections: 0, answered: 0, handshakes: 0, reset: 0 } as ClosingWsUpstream;
  const served = new WeakSet<Socket>();
  const sockets = new Set<Socket>();
  const server = createHttpServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    const socket = req.socket;
    if (served.has(socket)) {
      up.reset += 1;
      socket.resetAndDestroy();
      return;
    }
    served.add(socket);
    up.answered += 1;
    res.writeHead(200, { 'content-length': '2' });
    res.end('ok');
  });
  server.on('connection', (socket: Socket) => {
    up.connections += 1;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    if (served.has(socket)) {
      up.reset += 1;
      socket.resetAndDestroy();
      return;
    }
    served.add(socket);
    up.handshakes += 1;
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('error', () => undefined);
      ws.on('message', (m) => ws.send(`echo:${m.toString()}`));
    });
  });
  Object.assign(up, await listening(server, 'http', () => sockets));
  return up;
}

describe('stale pooled connections over HTTP/2: a body that cannot be sent again', () => {
  it('a POST whose stream GOAWAY refused answers 502 UPSTREAM_RESET and holds nothing against the endpoint', async () => {
    const up = await h2Upstream('goaway');
    opened.push(up);
    // maxAttempts 1: the body is streamed, not kept, so neither undici nor the gateway can resend it.
    const gw = await gatewayTo(up, { maxAttempts: 1 }, { tls: { ca: certs.ca }, protocol: 'h2' });
    expect((await request(`${gw.url}/first`)).statusCode).toBe(200);
    const res = await request(`${gw.url}/post`, { method: 'POST', body: 'payload' });
    expect(res.statusCode).toBe(502);
    // The upstream did not process the stream (RFC 9113 §6.8): it closed the connection, gracefully.
    expect(((await res.body.json()) as { code: string }).code).toBe('UPSTREAM_RESET');
    expect(up.goneAway).toBe(1);
    const text = await metrics(gw);
    expect(metricValue(text, 'peregrine_upstream_circuit_state', { upstream: 'u' })).toBe(0);
    expect(
      metricValue(text, 'peregrine_upstream_attempts_total', {
        upstream: 'u',
        endpoint: up.url,
        outcome: 'stale_connection',
      }),
    ).toBe(1);
    // The endpoint keeps taking requests (one failure would have opened the breaker).
    const after = await request(`${gw.url}/after`);
    expect(after.statusCode).toBe(200);
    expect(await after.body.text()).toBe('ok');
  });
});

describe('stale pooled connections and WebSocket', () => {
  it('a handshake that meets a closed pooled connection is sent again on a fresh one and the tunnel opens', async () => {
    const up = await closingWsUpstream();
    opened.push(up);
    const gw = await gatewayTo(up, { maxAttempts: 1 });
    // A plain request leaves its connection idle in the pool; the handshake goes out on it.
    expect((await request(`${gw.url}/first`)).statusCode).toBe(200);
    const h = wsHandshake(gw.port, '/chat');
    opened.push({ close: async () => h.ws.terminate() });
    await tunnelOpened(h);
    const echoed = new Promise<string>((resolve) => h.ws.once('message', (m) => resolve(m.toString())));
    h.ws.send('hello');
    expect(await echoed).toBe('echo:hello');
    expect([up.reset, up.answered, up.handshakes, up.connections]).toEqual([1, 1, 1, 2]);
    await expectReplayedWithoutFailure(gw, up.url, 1);
    const text = await metrics(gw);
    expect(metricValue(text, 'peregrine_websocket_upgrades_total', { route: 'r', outcome: 'success' })).toBe(
      1,
    );
  });
});
