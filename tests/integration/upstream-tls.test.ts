/**
 * `https://` upstreams whose TLS fails: real TLS servers with certificates made in the test, the
 * test CA added to the process's default trust store (what the gateway verifies upstreams
 * against). Each failure gets its own code, outcome and log line, and is never retried on the
 * endpoint that failed.
 */
import { createServer as createHttpServer, request as httpRequest, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import tls from 'node:tls';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { InMemorySpanExporter, SimpleSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type IssuedCert, TestCa } from '../helpers/certs.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';

const DAY = 24 * 3600_000;
const defaultCas = tls.getCACertificates('default');
let ca: TestCa;
const certs: Record<string, IssuedCert> = {};

beforeAll(async () => {
  ca = await TestCa.create();
  const otherCa = await TestCa.create('Untrusted CA');
  const now = Date.now();
  [certs.good, certs.expired, certs.unknownCa, certs.nameMismatch] = await Promise.all([
    ca.server(),
    ca.server({ notBefore: new Date(now - 10 * DAY), notAfter: new Date(now - DAY) }),
    otherCa.server(),
    ca.server({ dns: ['elsewhere.example'], ips: [] }),
  ]);
  tls.setDefaultCACertificates([...defaultCas, ca.cert]);
});
afterAll(() => tls.setDefaultCACertificates(defaultCas));

interface TestServer {
  readonly url: string;
  /** TCP connections accepted: one per connect attempt of the gateway. */
  connections: number;
  requests: number;
  close(): Promise<void>;
}

const opened: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.close();
});

async function serve(server: Server, scheme: 'http' | 'https'): Promise<TestServer> {
  const sockets = new Set<Socket>();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const t: TestServer = {
    url: `${scheme}://127.0.0.1:${(server.address() as AddressInfo).port}`,
    connections: 0,
    requests: 0,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  server.on('connection', (s: Socket) => {
    t.connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('request', (_req, res) => {
    t.requests++;
    res.end('ok');
  });
  server.on('tlsClientError', () => {});
  opened.push(t);
  return t;
}

function httpsUpstream(cert: IssuedCert): Promise<TestServer> {
  return serve(createHttpsServer({ cert: cert.cert, key: cert.key }), 'https');
}

async function gateway(
  endpoints: string[],
  retries: Record<string, unknown> = {},
  spanProcessor?: SpanProcessor,
): Promise<TestGateway> {
  const g = await startGateway(
    {
      ...(spanProcessor && { telemetry: { tracing: { sampleRatio: 1 } } }),
      upstreams: {
        u: {
          endpoints,
          balancer: { kind: 'round_robin' },
          retries: { budget: { minRetriesPerSecond: 100 }, ...retries },
          circuitBreaker: { enabled: false },
          outlierDetection: { enabled: false },
        } as never,
      },
      routes: [{ name: 'r', upstream: 'u' }],
    },
    { spanProcessor },
  );
  opened.push(g);
  return g;
}

async function metric(gw: TestGateway, re: RegExp): Promise<number> {
  const m = re.exec(await (await fetch(`${gw.adminUrl}/metrics`)).text());
  return m ? Number(m[1]) : 0;
}

describe('upstream TLS certificate verification', () => {
  it('a trusted certificate is accepted (the failures below are about the certificate, not the setup)', async () => {
    const up = await httpsUpstream(certs.good!);
    const gw = await gateway([up.url]);
    const res = await fetch(`${gw.url}/ok`);
    expect([res.status, await res.text()]).toEqual([200, 'ok']);
  });

  it.each([
    ['expired', 'expired', 'CERT_HAS_EXPIRED', 'cert_expired'],
    ['signed by an unknown CA', 'unknownCa', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'unknown_ca'],
    ['for another name', 'nameMismatch', 'ERR_TLS_CERT_ALTNAME_INVALID', 'name_mismatch'],
  ])(
    'a certificate %s: 502 UPSTREAM_TLS_VERIFY_FAILED, outcome tls_error, a log line with the reason, no retry on that endpoint',
    async (_what, which, code, reason) => {
      const up = await httpsUpstream(certs[which]!);
      const gw = await gateway([up.url], { maxAttempts: 3 });
      for (let i = 0; i < 2; i++) {
        const res = await fetch(`${gw.url}/x/${i}`);
        expect([res.status, res.headers.get('x-peregrine-reason')]).toEqual([
          502,
          'UPSTREAM_TLS_VERIFY_FAILED',
        ]);
        // The client learns the code, not the upstream's certificate details.
        expect(JSON.stringify(await res.json())).not.toContain(code);
      }
      // One connection per request: never retried against the endpoint that refused.
      expect(up.connections).toBe(2);
      expect(up.requests).toBe(0);
      expect(
        await metric(gw, /peregrine_upstream_attempts_total\{[^}]*outcome="tls_error"[^}]*\} (\d+)/),
      ).toBe(2);
      expect(
        await metric(gw, /peregrine_upstream_decisions_total\{upstream="u",decision="retry"\} (\d+)/),
      ).toBe(0);
      const lines = gw.logs.lines().filter((l) => l.msg === 'upstream TLS certificate verification failed');
      // The second failure within the log interval is counted, not logged again.
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ upstream: 'u', endpoint: up.url, code, reason, level: 'warn' });
      expect(gw.logs.access().map((l) => l.code)).toEqual([
        'UPSTREAM_TLS_VERIFY_FAILED',
        'UPSTREAM_TLS_VERIFY_FAILED',
      ]);
    },
  );

  it('a verification failure is retried on another endpoint, even for a POST (nothing was sent)', async () => {
    const bad = await httpsUpstream(certs.expired!);
    const good = await httpsUpstream(certs.good!);
    const gw = await gateway([bad.url, good.url]);
    for (let i = 0; i < 4; i++) {
      const res = await fetch(`${gw.url}/p/${i}`, {
        method: i % 2 ? 'POST' : 'GET',
        body: i % 2 ? 'x' : undefined,
      });
      expect(res.status).toBe(200);
    }
    expect(good.requests).toBe(4);
    expect(bad.connections).toBe(2);
    expect(
      await metric(gw, /peregrine_upstream_retries_total\{upstream="u",reason="connect_failure"\} (\d+)/),
    ).toBe(2);
  });
});

describe('upstream TLS server name', () => {
  it("is the endpoint's host, never the client's Host (preserveHost), and a changing Host keeps the connection", async () => {
    const up = await httpsUpstream(certs.good!);
    const g = await startGateway({
      upstreams: { u: { endpoints: [up.url], retries: { maxAttempts: 1 } } as never },
      routes: [{ name: 'r', upstream: 'u', preserveHost: true }],
    });
    opened.push(g);
    for (const host of ['api.example.com', 'shop.example.com', 'api.example.com']) {
      const res = await new Promise<number>((resolve, reject) => {
        const req = httpRequest({ port: g.port, host: '127.0.0.1', path: '/n', headers: { host } }, (r) => {
          r.resume();
          r.on('end', () => resolve(r.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end();
      });
      expect(res).toBe(200);
    }
    // One connection: undici closes a connection whose TLS name would change with the Host.
    expect(up.connections).toBe(1);
    expect(up.requests).toBe(3);
  });
});

describe('upstream TLS handshake failure', () => {
  it('an endpoint that does not speak TLS: 502 UPSTREAM_TLS_HANDSHAKE_FAILED, reason not_tls, not retried on it', async () => {
    const plain = await serve(createHttpServer(), 'http');
    const gw = await gateway([plain.url.replace('http:', 'https:')], { maxAttempts: 3 });
    const res = await fetch(`${gw.url}/h`);
    expect([res.status, res.headers.get('x-peregrine-reason')]).toEqual([
      502,
      'UPSTREAM_TLS_HANDSHAKE_FAILED',
    ]);
    expect(plain.connections).toBe(1);
    const line = gw.logs.lines().find((l) => l.msg === 'upstream TLS handshake failed');
    expect(line).toMatchObject({ upstream: 'u', reason: 'not_tls' });
    expect(String(line!.code)).toMatch(/^ERR_SSL_/);
  });

  it("ends the attempt's CLIENT span as failed, typed by the code, with the outcome", async () => {
    const exporter = new InMemorySpanExporter();
    const processor = new SimpleSpanProcessor(exporter);
    const plain = await serve(createHttpServer(), 'http');
    const gw = await gateway([plain.url.replace('http:', 'https:')], { maxAttempts: 1 }, processor);
    const res = await fetch(`${gw.url}/h`);
    expect(res.status).toBe(502);
    await processor.forceFlush();
    const client = exporter.getFinishedSpans().find((s) => s.kind === SpanKind.CLIENT);
    expect(client?.status.code).toBe(SpanStatusCode.ERROR);
    expect(client?.attributes).toMatchObject({
      'error.type': 'UPSTREAM_TLS_HANDSHAKE_FAILED',
      'peregrine.outcome': 'tls_error',
    });
  });
});
