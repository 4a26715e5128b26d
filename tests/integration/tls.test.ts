/**
 * TLS listener: HTTP/1.1 over TLS, versions, ALPN, refusals counted with a reason, h2c never
 * tunnelled, WebSocket over TLS, the certificate on the admin API and in metrics, and a bad
 * certificate stopping the start. Real certificates from a throwaway CA.
 */
import { readdirSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { ConfigSchema } from '../../src/config/schema.ts';
import {
  type CertFiles,
  createTestPki,
  type IssuedCert,
  removeCertFiles,
  type TestPki,
  writeCertFiles,
} from '../helpers/certs.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { rawRequest } from '../helpers/raw-http.ts';
import { httpsFetch, metricValue, scrape } from '../helpers/tls-client.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let pki: TestPki;
let files: CertFiles;
let up: TestUpstream;
let gw: TestGateway;

beforeAll(async () => {
  pki = await createTestPki();
  files = writeCertFiles(pki.server, pki.ca.cert);
  up = await startUpstream();
  // From a YAML file, as an operator would configure it.
  gw = await startGateway(
    {
      listeners: [{ name: 'edge', address: '127.0.0.1:0', tls: { cert: files.cert, key: files.key } }],
      upstreams: { echo: { endpoints: [up.url] } },
      routes: [{ name: 'echo', upstream: 'echo' }],
    },
    { asFile: true },
  );
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
  removeCertFiles();
});

function lastSeen() {
  return up.requests[up.requests.length - 1]!;
}

interface Echo {
  url: string;
  headers: Record<string, string>;
}

describe('TLS listener', () => {
  it('serves HTTP/1.1 over TLS 1.3 with the configured certificate and X-Forwarded-Proto https', async () => {
    const res = await httpsFetch(gw.port, '/hello?x=1', { ca: pki.ca.cert }, { alpn: ['http/1.1'] });
    expect(res.status).toBe(200);
    expect(res.alpn).toBe('http/1.1');
    expect(res.protocol).toBe('TLSv1.3');
    expect(res.peer?.serialNumber).toBe(pki.server.serial);
    const body = JSON.parse(res.body) as Echo;
    expect(body.url).toBe('/hello?x=1');
    expect(body.headers['x-forwarded-proto']).toBe('https');
    expect(body.headers.host).toBe(`127.0.0.1:${gw.port}`);
  });

  it('gives a client without ALPN HTTP/1.1, and accepts TLS 1.2', async () => {
    const res = await httpsFetch(gw.port, '/plain', { ca: pki.ca.cert, maxVersion: 'TLSv1.2' });
    expect(res.status).toBe(200);
    expect(res.alpn).toBe(false);
    expect(res.protocol).toBe('TLSv1.2');
    const text = await scrape(gw.adminUrl);
    expect(
      metricValue(text, 'peregrine_tls_handshakes_total', {
        listener: 'edge',
        protocol: 'TLSv1.2',
        alpn: 'none',
      }),
    ).toBeGreaterThanOrEqual(1);
    expect(
      metricValue(text, 'peregrine_tls_handshakes_total', {
        listener: 'edge',
        protocol: 'TLSv1.3',
        alpn: 'http/1.1',
      }),
    ).toBeGreaterThanOrEqual(1);
  });

  it('refuses a TLS 1.1 client and counts it as protocol_version', async () => {
    const before = metricValue(await scrape(gw.adminUrl), 'peregrine_tls_handshake_failures_total', {
      listener: 'edge',
      reason: 'protocol_version',
    });
    const err = await httpsFetch(gw.port, '/old', {
      ca: pki.ca.cert,
      minVersion: 'TLSv1',
      maxVersion: 'TLSv1.1',
      // OpenSSL 3 disables TLS 1.1 at its default security level; level 0 lets the client try.
      ciphers: 'DEFAULT@SECLEVEL=0',
    }).catch((e: NodeJS.ErrnoException) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/protocol version|unsupported protocol/i);
    const after = metricValue(await scrape(gw.adminUrl), 'peregrine_tls_handshake_failures_total', {
      listener: 'edge',
      reason: 'protocol_version',
    });
    expect((after ?? 0) - (before ?? 0)).toBe(1);
  });

  it('refuses an ALPN list without a protocol it speaks', async () => {
    const err = await new Promise<Error>((resolve) => {
      const socket = tlsConnect({
        host: '127.0.0.1',
        port: gw.port,
        ca: pki.ca.cert,
        servername: 'localhost',
        ALPNProtocols: ['h3', 'spdy/3'],
      });
      socket.on('secureConnect', () => resolve(new Error('handshake succeeded')));
      socket.on('error', resolve);
    });
    expect(err.message).toMatch(/no application protocol/i);
  });

  it('answers plain HTTP on the TLS port with nothing and counts not_tls', async () => {
    const raw = await rawRequest(gw.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n', 500);
    expect(raw).not.toMatch(/^HTTP\/1\.1 200/);
    const text = await scrape(gw.adminUrl);
    expect(
      metricValue(text, 'peregrine_tls_handshake_failures_total', { listener: 'edge', reason: 'not_tls' }),
    ).toBe(1);
  });

  it('never tunnels Upgrade: h2c; the request is forwarded without its upgrade headers', async () => {
    const res = await httpsFetch(
      gw.port,
      '/h2c',
      { ca: pki.ca.cert },
      {
        headers: {
          connection: 'Upgrade, HTTP2-Settings',
          upgrade: 'h2c',
          'http2-settings': 'AAMAAABkAARAAAAAAAIAAAAA',
        },
      },
    );
    expect(res.status).toBe(200);
    // Served as a plain request and then closed (the Upgrade was ignored, RFC 9110 §7.8).
    expect(res.headers.connection).toBe('close');
    const names = lastSeen()
      .rawHeaders.filter((_, i) => i % 2 === 0)
      .map((n) => n.toLowerCase());
    expect(names).not.toContain('upgrade');
    expect(names).not.toContain('http2-settings');
    expect(lastSeen().url).toBe('/h2c');
  });

  it('proxies a WebSocket upgrade over TLS (wss)', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((r) => wss.once('listening', r));
    wss.on('connection', (sock, req) => {
      sock.on('message', (m) =>
        sock.send(`echo:${m.toString()}:${req.headers['x-forwarded-proto']}:${req.headers.upgrade}`),
      );
    });
    const port = (wss.address() as { port: number }).port;
    const local = await startGateway({
      listeners: [{ name: 'edge', address: '127.0.0.1:0', tls: { cert: files.cert, key: files.key } }],
      upstreams: { ws: { endpoints: [`http://127.0.0.1:${port}`] } },
      routes: [{ name: 'ws', match: { path: '/ws' }, upstream: 'ws' }],
    });
    try {
      const client = new WebSocket(`wss://localhost:${local.port}/ws`, { ca: pki.ca.cert });
      await new Promise((resolve, reject) => {
        client.once('open', resolve);
        client.once('error', reject);
      });
      const reply = new Promise<string>((resolve) => client.once('message', (m) => resolve(m.toString())));
      client.send('hi');
      expect(await reply).toBe('echo:hi:https:websocket');
      client.close();
    } finally {
      await local.close();
      await new Promise((r) => wss.close(r));
    }
  });

  it('shows the served certificate on GET /v1/certs and its expiry as a metric', async () => {
    const res = await fetch(`${gw.adminUrl}/v1/certs`);
    expect(res.status).toBe(200);
    const { listeners } = (await res.json()) as {
      listeners: {
        listener: string;
        clientAuth: string;
        server: {
          subject: string;
          issuer: string;
          serial: string;
          fingerprint256: string;
          notBefore: string;
          notAfter: string;
          sans: { dns: string[]; ips: string[] };
        };
        reloads: { success: number; failure: number };
        lastError: unknown;
        watching: boolean;
      }[];
    };
    expect(listeners).toHaveLength(1);
    const edge = listeners[0]!;
    expect(edge.listener).toBe('edge');
    expect(edge.clientAuth).toBe('none');
    expect(edge.server.serial).toBe(pki.server.serial);
    expect(edge.server.fingerprint256).toBe(pki.server.fingerprint256);
    expect(edge.server.subject).toBe('CN=localhost');
    expect(edge.server.issuer).toBe('CN=Peregrine Test CA');
    expect(edge.server.sans.dns).toEqual(['localhost']);
    expect(edge.server.sans.ips).toEqual(['127.0.0.1']);
    expect(edge.server.notAfter).toBe(pki.server.x509.validToDate.toISOString());
    expect(edge.reloads).toEqual({ success: 0, failure: 0 });
    expect(edge.lastError).toBeNull();
    expect(edge.watching).toBe(true);

    const text = await scrape(gw.adminUrl);
    expect(
      metricValue(text, 'peregrine_tls_certificate_expiry_timestamp_seconds', {
        listener: 'edge',
        role: 'server',
        subject: 'CN=localhost',
      }),
    ).toBe(pki.server.x509.validToDate.getTime() / 1000);
  });

  it('does not start with a key that does not match the certificate, or an expired certificate', async () => {
    const mismatched = writeCertFiles({ ...pki.server, key: pki.payments.key }, pki.ca.cert);
    await expect(
      startGateway({
        listeners: [
          { name: 'edge', address: '127.0.0.1:0', tls: { cert: mismatched.cert, key: mismatched.key } },
        ],
      }),
    ).rejects.toThrow(/does not match certificate/);
    const expired = writeCertFiles(pki.expired, pki.ca.cert);
    await expect(
      startGateway({
        listeners: [{ name: 'edge', address: '127.0.0.1:0', tls: { cert: expired.cert, key: expired.key } }],
      }),
    ).rejects.toThrow(/expired at/);
  });

  it('refuses TLS versions below 1.2 and mTLS without a CA bundle in the schema', () => {
    const base = { name: 'edge', address: '127.0.0.1:8443' };
    const old = ConfigSchema.safeParse({
      listeners: [{ ...base, tls: { cert: 'a.crt', key: 'a.key', minVersion: 'TLSv1.1' } }],
    });
    expect(old.success).toBe(false);
    expect(old.error?.issues[0]?.message).toMatch(/below 1\.2 are refused/);
    expect(old.error?.issues[0]?.path).toEqual(['listeners', 0, 'tls', 'minVersion']);
    const noCa = ConfigSchema.safeParse({
      listeners: [{ ...base, tls: { cert: 'a.crt', key: 'a.key', clientAuth: 'required' } }],
    });
    expect(noCa.success).toBe(false);
    expect(noCa.error?.issues[0]?.path).toEqual(['listeners', 0, 'tls', 'clientCa']);
    const ok = ConfigSchema.parse({ listeners: [{ ...base, tls: { cert: 'a.crt', key: 'a.key' } }] });
    expect(ok.listeners[0]!.tls).toMatchObject({
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.3',
      clientAuth: 'none',
    });
    expect(ok.listeners[0]!.http2).toMatchObject({ enabled: true, maxConcurrentStreams: 100 });
  });
});

/** Complete a TLS 1.2 handshake offering only `ciphers`: the suite chosen, or the error. */
function handshake(port: number, ca: string, ciphers: string): Promise<string | Error> {
  return new Promise((resolve) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      ca,
      servername: 'localhost',
      maxVersion: 'TLSv1.2',
      ciphers,
    });
    socket.on('secureConnect', () => {
      resolve(socket.getCipher().standardName);
      socket.destroy();
    });
    socket.on('error', resolve);
  });
}

function openDescriptors(): number {
  return readdirSync('/proc/self/fd').length;
}

describe('TLS defaults and handshake limits (threat catalogue C, F)', () => {
  let rsa: IssuedCert;
  let rsaFiles: CertFiles;

  beforeAll(async () => {
    rsa = await pki.ca.server({ keyType: 'rsa' });
    rsaFiles = writeCertFiles(rsa, pki.ca.cert);
  });

  it("offers only Mozilla's intermediate suites for TLS 1.2 by default, even with an RSA certificate", async () => {
    const local = await startGateway({
      listeners: [{ name: 'edge', address: '127.0.0.1:0', tls: { cert: rsaFiles.cert, key: rsaFiles.key } }],
      upstreams: { echo: { endpoints: [up.url] } },
      routes: [{ name: 'echo', upstream: 'echo' }],
    });
    try {
      const ca = pki.ca.cert;
      // No forward secrecy (static RSA key exchange), CBC, CCM and ARIA: refused.
      for (const suite of [
        'AES128-GCM-SHA256',
        'AES256-SHA256',
        'ECDHE-RSA-AES128-SHA256',
        'ECDHE-RSA-AES256-SHA',
        'AES128-CCM',
        'ECDHE-ARIA128-GCM-SHA256',
      ]) {
        const result = await handshake(local.port, ca, suite);
        expect(result, suite).toBeInstanceOf(Error);
      }
      // ECDHE with AES-GCM or ChaCha20-Poly1305: accepted.
      expect(await handshake(local.port, ca, 'ECDHE-RSA-AES128-GCM-SHA256')).toBe(
        'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256',
      );
      expect(await handshake(local.port, ca, 'ECDHE-RSA-AES256-GCM-SHA384')).toBe(
        'TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384',
      );
      expect(await handshake(local.port, ca, 'ECDHE-RSA-CHACHA20-POLY1305')).toBe(
        'TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256',
      );
      // TLS 1.3 keeps its suites, and a default client gets it.
      const res = await httpsFetch(local.port, '/rsa', { ca }, { alpn: ['http/1.1'] });
      expect(res.status).toBe(200);
      expect(res.protocol).toBe('TLSv1.3');
      const text = await scrape(local.adminUrl);
      expect(
        metricValue(text, 'peregrine_tls_handshake_failures_total', {
          listener: 'edge',
          reason: 'no_shared_cipher',
        }),
      ).toBe(6);
    } finally {
      await local.close();
    }
  });

  it('lets tls.ciphers override the default list', async () => {
    const local = await startGateway({
      listeners: [
        {
          name: 'edge',
          address: '127.0.0.1:0',
          tls: { cert: rsaFiles.cert, key: rsaFiles.key, ciphers: 'AES128-GCM-SHA256' },
        },
      ],
      upstreams: { echo: { endpoints: [up.url] } },
      routes: [{ name: 'echo', upstream: 'echo' }],
    });
    try {
      expect(await handshake(local.port, pki.ca.cert, 'AES128-GCM-SHA256')).toBe(
        'TLS_RSA_WITH_AES_128_GCM_SHA256',
      );
      expect(await handshake(local.port, pki.ca.cert, 'ECDHE-RSA-AES128-GCM-SHA256')).toBeInstanceOf(Error);
    } finally {
      await local.close();
    }
  });

  it('destroys the sockets of clients that never finish the handshake (open descriptors return to baseline)', async () => {
    const local = await startGateway({
      listeners: [
        {
          name: 'edge',
          address: '127.0.0.1:0',
          tls: { cert: files.cert, key: files.key, handshakeTimeout: '300ms' },
        },
      ],
      upstreams: { echo: { endpoints: [up.url] } },
      routes: [{ name: 'echo', upstream: 'echo' }],
    });
    const clients: Socket[] = [];
    try {
      const baseline = openDescriptors();
      const count = 100;
      // Silent clients: TCP connected, not a byte of TLS sent. Each closes its side once the
      // gateway closes its own, so the in-process count covers both ends.
      await Promise.all(
        Array.from(
          { length: count },
          () =>
            new Promise<void>((resolve, reject) => {
              const socket = netConnect(local.port, '127.0.0.1', () => resolve());
              socket.on('error', () => {});
              socket.once('error', reject);
              clients.push(socket);
            }),
        ),
      );
      expect(openDescriptors()).toBeGreaterThanOrEqual(baseline + count);
      let open = openDescriptors();
      for (let i = 0; i < 100 && open > baseline; i++) {
        await new Promise((r) => setTimeout(r, 50));
        open = openDescriptors();
      }
      expect(open).toBeLessThanOrEqual(baseline);
      expect(clients.every((c) => c.destroyed)).toBe(true);
      const text = await scrape(local.adminUrl);
      expect(
        metricValue(text, 'peregrine_tls_handshake_failures_total', { listener: 'edge', reason: 'timeout' }),
      ).toBe(count);
      expect(metricValue(text, 'peregrine_open_connections', { listener: 'edge' })).toBe(0);
    } finally {
      for (const c of clients) c.destroy();
      await local.close();
    }
  });
});
