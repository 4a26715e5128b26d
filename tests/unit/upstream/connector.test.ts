import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createConnector } from '../../../src/dataplane/upstream/connector.ts';
import { Endpoint, endpointTransport } from '../../../src/dataplane/upstream/endpoint.ts';
import { removeCertFiles, TestCa, writeCertFiles } from '../../helpers/certs.ts';
import { type FullBacklog, startFullBacklog } from '../../helpers/full-backlog.ts';
import { noDelayOf } from '../../helpers/socket-options.ts';
import { upstream } from './helpers.ts';

let backlog: FullBacklog;
let listening: Server;
let listeningPort = 0;
beforeAll(async () => {
  backlog = await startFullBacklog();
  listening = createServer((s) => s.on('error', () => {}));
  await new Promise<void>((resolve) => listening.listen(0, '127.0.0.1', resolve));
  listeningPort = (listening.address() as { port: number }).port;
});
afterAll(async () => {
  await backlog.close();
  await new Promise((resolve) => listening.close(resolve));
});
afterEach(() => {
  vi.useRealTimers();
});

type Result = { error: (Error & { code?: string }) | null; socket: Socket | null | undefined };
type Connecting = { result: Result | undefined; done: Promise<Result>; socket: Socket };

function connectTo(timeoutMs: number, port: number): Connecting {
  const state = { result: undefined } as Connecting;
  state.done = new Promise((resolve) => {
    state.socket = createConnector(timeoutMs)(
      { hostname: '127.0.0.1', host: '127.0.0.1', protocol: 'http:', port: String(port) },
      (error, socket) => {
        state.result = { error, socket };
        resolve(state.result);
      },
    );
  });
  return state;
}

/** Let pending I/O callbacks run without moving the fake clock. */
async function settle(): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
}

describe('createConnector', () => {
  it('times a hanging connect out exactly at its timeout, as undici would (UND_ERR_CONNECT_TIMEOUT)', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const c = connectTo(250, backlog.port);
    await settle();
    vi.advanceTimersByTime(249);
    await settle();
    expect(c.result).toBeUndefined();
    vi.advanceTimersByTime(1);
    const { error, socket } = await c.done;
    expect(socket).toBeFalsy();
    expect(c.socket.destroyed).toBe(true);
    expect(error?.code).toBe('UND_ERR_CONNECT_TIMEOUT');
    expect(error?.message).toContain('250 ms');
  });

  it('a connection made in time is handed over and never timed out later', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const c = connectTo(250, listeningPort);
    const { error, socket } = await c.done;
    expect(error).toBeNull();
    vi.advanceTimersByTime(10_000);
    await settle();
    expect(socket!.destroyed).toBe(false);
    socket!.destroy();
  });

  it('timeout 0 waits as long as the kernel does', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const c = connectTo(0, backlog.port);
    vi.advanceTimersByTime(60_000);
    await settle();
    expect(c.result).toBeUndefined();
    expect(c.socket.destroyed).toBe(false);
    c.socket.destroy();
  });

  it('keeps the transport key of an endpoint as it was: the connect timeout is part of it', () => {
    const cfg = upstream({ timeouts: { connect: '2s' } });
    const key = endpointTransport('http://127.0.0.1:1', cfg);
    expect(key).toContain('"connect":{"timeout":2000}');
    expect(endpointTransport('http://127.0.0.1:1', upstream({ timeouts: { connect: '3s' } }))).not.toBe(key);
    const e = new Endpoint('http://127.0.0.1:1', cfg);
    expect(e.transport).toBe(key);
    return e.close();
  });

  it('https endpoints: TLS settings and protocol are part of the key; the TLS name never comes from a Host', () => {
    const https = (extra: Record<string, unknown> = {}) =>
      upstream({ endpoints: ['https://10.0.0.5:8443'], ...extra });
    const key = endpointTransport('https://10.0.0.5:8443', https());
    expect(key).toContain('"connect":{"timeout":2000,"tls":null,"protocol":"http1"}');
    expect(endpointTransport('https://10.0.0.5:8443', https({ protocol: 'auto' }))).toContain(
      '"allowH2":true',
    );
    const named = https({ tls: { serverName: 'orders.internal' } });
    expect(endpointTransport('https://10.0.0.5:8443', named)).not.toBe(key);
    const e = new Endpoint('https://10.0.0.5:8443', named);
    const ip = new Endpoint('https://10.0.0.5:8443', https());
    const plain = new Endpoint('http://[::1]:80', upstream());
    // undici compares each request's servername with the connection's: the same for every request.
    expect([e.servername, ip.servername, plain.servername]).toEqual(['orders.internal', '10.0.0.5', '::1']);
    return Promise.all([e.close(), ip.close(), plain.close()]);
  });

  it('sets TCP_NODELAY on every connection it makes, TLS (mTLS to a mesh peer) and plain', async () => {
    const ca = await TestCa.create();
    const [server, client] = await Promise.all([
      ca.server(),
      ca.client('spiffe://prod.example/ns/edge/sa/gateway'),
    ]);
    const files = writeCertFiles(client, ca.cert);
    const tlsServer = createTlsServer({ cert: server.cert, key: server.key }, (s) => s.on('error', () => {}));
    await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', resolve));
    const tlsPort = (tlsServer.address() as { port: number }).port;
    const e = new Endpoint(
      `https://127.0.0.1:${tlsPort}`,
      upstream({
        endpoints: [`https://127.0.0.1:${tlsPort}`],
        tls: { ca: files.ca, cert: files.cert, key: files.key, watch: false },
      }),
    );
    const connect = (connector: ReturnType<Endpoint['connector']>, port: number, protocol: string) =>
      new Promise<Socket>((resolve, reject) => {
        connector({ hostname: '127.0.0.1', host: '127.0.0.1', protocol, port: String(port) }, (err, s) =>
          err ? reject(err) : resolve(s as Socket),
        );
      });
    try {
      // The connector of the endpoint's pool and of its one-off clients (a stale connection's replay).
      const tlsSocket = await connect(e.connector(2000), tlsPort, 'https:');
      const plainSocket = await connect(createConnector(2000), listeningPort, 'http:');
      expect([noDelayOf(tlsSocket), noDelayOf(plainSocket)]).toEqual([true, true]);
      tlsSocket.destroy();
      plainSocket.destroy();
    } finally {
      await e.close();
      await new Promise((resolve) => tlsServer.close(resolve));
      removeCertFiles();
    }
  });
});
