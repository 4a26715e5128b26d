/**
 * Outbound (mesh) TLS toward upstreams with a private CA, a client certificate and an expected
 * SPIFFE identity: real TLS upstreams, certificates made in the test. The chain must end at the
 * configured CA (and only there), the certificate must be an X.509-SVID with an expected SPIFFE
 * ID (never a DNS name or CN that looks like one), the upstream gets our client certificate, the
 * server name is the endpoint's (never the client's Host), sessions are resumed, ALPN offers h2
 * only where the upstream says so, and a rotated client certificate reaches new connections with
 * no failed request while pools and keep-alive connections stay. Threat catalogue F, outbound.
 */
import { request } from 'node:http';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type CertFiles,
  type IssuedCert,
  removeCertFiles,
  replaceAtomically,
  TestCa,
  writeCertFiles,
} from '../helpers/certs.ts';
import { startGateway, type TestGateway, writeConfig } from '../helpers/gateway.ts';
import { metricValue, scrape } from '../helpers/tls-client.ts';
import { startTlsUpstream, type TlsUpstream, type TlsUpstreamOptions } from '../helpers/tls-upstream.ts';
import { until } from '../helpers/until.ts';

const TD = 'prod.example';
const ORDERS = `spiffe://${TD}/ns/shop/sa/orders`;
const PAYMENTS = `spiffe://${TD}/ns/shop/sa/payments`;
const GATEWAY = `spiffe://${TD}/ns/edge/sa/gateway`;

let ca: TestCa;
let otherCa: TestCa;
const certs: Record<string, IssuedCert> = {};
/** The gateway's client certificate, key and the mesh CA, as files. */
let files: CertFiles;

beforeAll(async () => {
  [ca, otherCa] = await Promise.all([TestCa.create('Mesh CA'), TestCa.create('Other CA')]);
  const svid = (id: string, extra = {}) => ca.issue({ cn: id.split('/').pop()!, uris: [id], ...extra });
  [
    certs.orders,
    certs.payments,
    certs.foreign,
    certs.dnsLookalike,
    certs.twoUris,
    certs.named,
    certs.gateway,
    certs.gateway2,
  ] = await Promise.all([
    svid(ORDERS, { dns: ['orders.internal'] }),
    svid(PAYMENTS),
    otherCa.issue({ cn: 'orders', uris: [ORDERS] }),
    // A DNS SAN and a CN spelled like the expected SPIFFE ID, and no URI SAN.
    ca.issue({ cn: ORDERS, dns: [ORDERS] }),
    ca.issue({ cn: 'two', uris: [ORDERS, PAYMENTS] }),
    ca.server({ dns: ['orders.internal'], ips: [] }),
    svid(GATEWAY, { eku: ['clientAuth'] }),
    svid(GATEWAY, { eku: ['clientAuth'] }),
  ]);
  files = writeCertFiles(certs.gateway!, ca.cert);
});
afterAll(() => removeCertFiles());

const opened: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.close();
});

async function upstream(opts: TlsUpstreamOptions): Promise<TlsUpstream> {
  const up = await startTlsUpstream(opts);
  opened.push(up);
  return up;
}

/** The mesh's TLS settings for an upstream: our CA, our client certificate, the expected identity. */
function meshTls(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { ca: files.ca, cert: files.cert, key: files.key, identity: { expect: [ORDERS] }, ...extra };
}

function upstreamConfig(endpoints: string[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    endpoints,
    balancer: { kind: 'round_robin' },
    retries: { maxAttempts: 3, budget: { minRetriesPerSecond: 100 } },
    circuitBreaker: { enabled: false },
    outlierDetection: { enabled: false },
    tls: meshTls(),
    ...extra,
  };
}

async function gateway(
  upstreams: Record<string, Record<string, unknown>>,
  opts: { asFile?: boolean; routes?: Record<string, unknown>[] } = {},
): Promise<TestGateway> {
  const name = Object.keys(upstreams)[0]!;
  const g = await startGateway(
    {
      upstreams: upstreams as never,
      routes: (opts.routes ?? [{ name: 'r', upstream: name }]) as never,
    },
    { asFile: opts.asFile },
  );
  opened.push(g);
  return g;
}

async function get(gw: TestGateway, path = '/x', headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${gw.url}${path}`, { headers });
}

/** A GET with a Host of our choosing (fetch does not let a caller set it). */
function getWithHost(gw: TestGateway, path: string, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ port: gw.port, host: '127.0.0.1', path, headers: { host } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function metric(gw: TestGateway, name: string, labels: Record<string, string>): Promise<number> {
  return metricValue(await scrape(gw.adminUrl), name, labels) ?? 0;
}

describe('mesh mTLS: chain, identity, client certificate', () => {
  it('right CA and right SPIFFE ID: 200, and the upstream got our client certificate (mTLS both ways)', async () => {
    const up = await upstream({ server: certs.orders!, clientCa: ca.cert });
    const gw = await gateway({ orders: upstreamConfig([up.url]) });
    const res = await get(gw);
    expect(res.status).toBe(200);
    expect(up.connections).toHaveLength(1);
    expect(up.connections[0]).toMatchObject({
      clientSerial: certs.gateway!.serial,
      clientUris: [GATEWAY],
      alpn: 'http/1.1',
    });
    expect(
      await metric(gw, 'peregrine_upstream_tls_handshakes_total', { upstream: 'orders', session: 'new' }),
    ).toBe(1);
    const view = (await (await fetch(`${gw.adminUrl}/v1/certs`)).json()) as { upstreams: unknown[] };
    expect(view.upstreams).toMatchObject([
      {
        upstream: 'orders',
        expectedIdentities: [ORDERS],
        client: { serial: certs.gateway!.serial, sans: { uris: [GATEWAY] } },
        ca: [{ subject: 'CN=Mesh CA' }],
        watching: true,
      },
    ]);
    expect(
      await metric(gw, 'peregrine_upstream_tls_certificate_expiry_timestamp_seconds', {
        upstream: 'orders',
        role: 'client',
      }),
    ).toBe(Math.floor(certs.gateway!.x509.validToDate.getTime() / 1000));
  });

  it('a chain from another CA: 502 UPSTREAM_TLS_VERIFY_FAILED, never retried on that endpoint', async () => {
    const up = await upstream({ server: certs.foreign!, clientCa: ca.cert });
    const gw = await gateway({ orders: upstreamConfig([up.url]) });
    const res = await get(gw);
    expect([res.status, res.headers.get('x-peregrine-reason')]).toEqual([502, 'UPSTREAM_TLS_VERIFY_FAILED']);
    expect(up.tcp).toBe(1);
    expect(up.requests).toBe(0);
    expect(
      await metric(gw, 'peregrine_upstream_tls_failures_total', { upstream: 'orders', reason: 'unknown_ca' }),
    ).toBe(1);
  });

  it('with a private ca, the public bundle is not trusted too', async () => {
    const defaults = tls.getCACertificates('default');
    // The other CA is now one Node trusts by default; the upstream's ca setting must still win.
    tls.setDefaultCACertificates([...defaults, otherCa.cert]);
    try {
      const up = await upstream({ server: certs.foreign!, clientCa: ca.cert });
      const gw = await gateway({
        orders: upstreamConfig([up.url], { tls: meshTls({ identity: undefined }) }),
      });
      const res = await get(gw);
      expect([res.status, res.headers.get('x-peregrine-reason')]).toEqual([
        502,
        'UPSTREAM_TLS_VERIFY_FAILED',
      ]);
    } finally {
      tls.setDefaultCACertificates(defaults);
    }
  });

  it('right CA, wrong SPIFFE ID: 502 UPSTREAM_IDENTITY_MISMATCH, counted, logged with what was seen and expected, retried only elsewhere', async () => {
    const wrong = await upstream({ server: certs.payments!, clientCa: ca.cert });
    const right = await upstream({ server: certs.orders!, clientCa: ca.cert });
    const only = await gateway({ orders: upstreamConfig([wrong.url]) });
    for (let i = 0; i < 2; i++) {
      const res = await get(only, `/m/${i}`);
      expect([res.status, res.headers.get('x-peregrine-reason')]).toEqual([
        502,
        'UPSTREAM_IDENTITY_MISMATCH',
      ]);
      const body = JSON.stringify(await res.json());
      // The client learns the code; which identities were seen and expected is for the log.
      expect(body).not.toContain(PAYMENTS);
    }
    // One connection per request: the endpoint that presented the wrong identity is not retried.
    expect(wrong.tcp).toBe(2);
    expect(wrong.requests).toBe(0);
    expect(
      await metric(only, 'peregrine_upstream_tls_failures_total', {
        upstream: 'orders',
        reason: 'identity_mismatch',
      }),
    ).toBe(2);
    expect(
      await metric(only, 'peregrine_upstream_attempts_total', { upstream: 'orders', outcome: 'tls_error' }),
    ).toBe(2);
    const lines = only.logs.lines().filter((l) => l.msg === 'upstream identity verification failed');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 'warn',
      upstream: 'orders',
      endpoint: wrong.url,
      reason: 'identity_mismatch',
      seen: [PAYMENTS],
      expected: [ORDERS],
      problem: 'unexpected SPIFFE ID',
    });

    const both = await gateway({ orders: upstreamConfig([wrong.url, right.url]) });
    for (let i = 0; i < 4; i++) expect((await get(both, `/b/${i}`)).status).toBe(200);
    expect(right.requests).toBe(4);
  });

  it('a session from a connection whose identity was refused is never resumed (TLS 1.2 makes it during the handshake)', async () => {
    const wrong = await upstream({ server: certs.payments!, clientCa: ca.cert, maxVersion: 'TLSv1.2' });
    const gw = await gateway({ orders: upstreamConfig([wrong.url], { retries: { maxAttempts: 1 } }) });
    for (let i = 0; i < 3; i++) {
      const res = await get(gw, `/t/${i}`);
      expect([res.status, res.headers.get('x-peregrine-reason')]).toEqual([
        502,
        'UPSTREAM_IDENTITY_MISMATCH',
      ]);
    }
    expect(wrong.requests).toBe(0);
    expect(wrong.connections.map((c) => c.resumed)).toEqual([false, false, false]);
  });

  it.each([
    [
      'a DNS SAN and CN spelled like the SPIFFE ID, no URI SAN',
      'dnsLookalike',
      'no URI SAN (no SPIFFE ID)',
      [],
    ],
    ['two URI SANs', 'twoUris', '2 URI SANs (an SVID has one)', [ORDERS, PAYMENTS]],
  ])('%s: UPSTREAM_IDENTITY_MISMATCH (not an SVID)', async (_what, which, problem, seen) => {
    const up = await upstream({ server: certs[which]!, clientCa: ca.cert });
    const gw = await gateway({ orders: upstreamConfig([up.url], { retries: { maxAttempts: 1 } }) });
    const res = await get(gw);
    expect([res.status, res.headers.get('x-peregrine-reason')]).toEqual([502, 'UPSTREAM_IDENTITY_MISMATCH']);
    expect(up.requests).toBe(0);
    const line = gw.logs.lines().find((l) => l.msg === 'upstream identity verification failed');
    expect(line).toMatchObject({ reason: 'not_svid', problem, seen, expected: [ORDERS] });
  });

  it('an expected identity pattern follows the upstream (service) name', async () => {
    const up = await upstream({ server: certs.orders!, clientCa: ca.cert });
    const pattern = { identity: { expectPattern: `spiffe://${TD}/ns/*/sa/{service}` } };
    const gw = await gateway(
      {
        orders: upstreamConfig([up.url], { tls: meshTls(pattern) }),
        payments: upstreamConfig([up.url], { tls: meshTls(pattern), retries: { maxAttempts: 1 } }),
      },
      {
        routes: [
          { name: 'orders', match: { path: '/orders' }, upstream: 'orders' },
          { name: 'payments', match: { path: '/payments' }, upstream: 'payments' },
        ],
      },
    );
    expect((await get(gw, '/orders/1')).status).toBe(200);
    const res = await get(gw, '/payments/1');
    expect([res.status, res.headers.get('x-peregrine-reason')]).toEqual([502, 'UPSTREAM_IDENTITY_MISMATCH']);
    const line = gw.logs.lines().find((l) => l.msg === 'upstream identity verification failed');
    expect(line).toMatchObject({ upstream: 'payments', expected: [`spiffe://${TD}/ns/*/sa/payments`] });
  });

  it('active health checks connect as the pool does: client certificate and identity', async () => {
    const up = await upstream({ server: certs.orders!, clientCa: ca.cert });
    const wrong = await upstream({ server: certs.payments!, clientCa: ca.cert });
    const gw = await gateway({
      orders: upstreamConfig([up.url, wrong.url], {
        healthCheck: { path: '/healthz', interval: '50ms', unhealthyThreshold: 1, healthyThreshold: 1 },
      }),
    });
    await until('both endpoints checked', () => up.requests >= 2 && wrong.tcp >= 2);
    expect(up.connections[0]).toMatchObject({ clientSerial: certs.gateway!.serial });
    expect(wrong.requests).toBe(0);
    const cluster = gw.gateway.store.current.clusters.get('orders')!;
    await until(
      'the wrong identity is unhealthy',
      () => cluster.describe().endpoints[1]!.state === 'unhealthy',
    );
    expect(cluster.describe().endpoints[0]!.state).toBe('healthy');
  });

  it('an upstream that requires a client certificate refuses a gateway without one', async () => {
    const up = await upstream({ server: certs.orders!, clientCa: ca.cert });
    const gw = await gateway({
      orders: upstreamConfig([up.url], {
        tls: { ca: files.ca, identity: { expect: [ORDERS] } },
        retries: { maxAttempts: 1 },
      }),
    });
    const res = await get(gw);
    expect(res.status).toBe(502);
    expect(up.requests).toBe(0);
  });
});

describe('a registry-discovered upstream', () => {
  it('the identity follows the registered service: an instance with another identity gets no request, a plain http:// one is skipped', async () => {
    process.env.PEREGRINE_TEST_MESH_TOKEN = 'mesh-registry-test-token-0123456789';
    const right = await upstream({ server: certs.orders!, clientCa: ca.cert });
    const wrong = await upstream({ server: certs.payments!, clientCa: ca.cert });
    const gw = await startGateway({
      registry: {
        listener: { address: '127.0.0.1:0' },
        credentials: { tokens: [{ name: 't', env: 'PEREGRINE_TEST_MESH_TOKEN', services: ['orders'] }] },
        addresses: { allowLoopback: true },
      },
      upstreams: {
        shop: upstreamConfig([], {
          endpoints: undefined,
          discovery: { registry: 'orders' },
          tls: meshTls({ identity: { expectPattern: `spiffe://${TD}/ns/*/sa/{service}` } }),
        }),
      } as never,
      routes: [{ name: 'r', upstream: 'shop' }],
    });
    opened.push(gw);
    const register = async (id: string, port: number, protocol: string) => {
      const res = await fetch(
        `http://127.0.0.1:${gw.gateway.registryAddress.port}/v1/services/orders/instances/${id}`,
        {
          method: 'PUT',
          headers: {
            authorization: `Bearer ${process.env.PEREGRINE_TEST_MESH_TOKEN}`,
            'content-type': 'application/json',
          },
          body: JSON.stringify({ address: '127.0.0.1', port, protocol, ttl: '30s' }),
        },
      );
      expect(res.status).toBe(201);
    };
    await register('right', right.port, 'https');
    await register('wrong', wrong.port, 'https');
    await register('clear', right.port, 'http');
    const cluster = () => gw.gateway.store.current.clusters.get('shop')!;
    await until('both https instances routable', () => cluster().endpoints.length === 2);
    for (let i = 0; i < 4; i++) expect((await get(gw, `/r/${i}`)).status).toBe(200);
    expect(right.requests).toBe(4);
    expect(wrong.requests).toBe(0);
    expect(gw.logs.lines().find((l) => l.msg === 'upstream identity verification failed')).toMatchObject({
      upstream: 'shop',
      seen: [PAYMENTS],
      expected: [`spiffe://${TD}/ns/*/sa/orders`],
    });
    expect(
      gw.logs
        .lines()
        .some(
          (l) =>
            String(l.msg).startsWith('endpoint skipped') && l.endpoint === `http://127.0.0.1:${right.port}`,
        ),
    ).toBe(true);
    delete process.env.PEREGRINE_TEST_MESH_TOKEN;
  });
});

describe('server name', () => {
  it('serverName is sent as SNI and is the name checked without an identity', async () => {
    const up = await upstream({ server: certs.named! });
    const gw = await gateway({
      orders: upstreamConfig([up.url], { tls: { ca: files.ca, serverName: 'orders.internal' } }),
    });
    expect((await get(gw)).status).toBe(200);
    expect(up.connections[0]!.servername).toBe('orders.internal');
    // Without it, the endpoint's address is the name checked, and the certificate does not carry it.
    const plain = await gateway({
      orders: upstreamConfig([up.url], { tls: { ca: files.ca }, retries: { maxAttempts: 1 } }),
    });
    const res = await get(plain);
    expect([res.status, res.headers.get('x-peregrine-reason')]).toEqual([502, 'UPSTREAM_TLS_VERIFY_FAILED']);
  });

  it("the client's Host (preserveHost) is never the TLS name, and changing Hosts keep the connection", async () => {
    const up = await upstream({ server: certs.named! });
    const gw = await gateway(
      { orders: upstreamConfig([up.url], { tls: { ca: files.ca, serverName: 'orders.internal' } }) },
      { routes: [{ name: 'r', upstream: 'orders', preserveHost: true }] },
    );
    for (const host of ['api.example.com', 'shop.example.com', 'api.example.com']) {
      const res = await getWithHost(gw, '/h', host);
      expect(res.status).toBe(200);
      expect((JSON.parse(res.body) as { host: string }).host).toBe(host);
    }
    expect(up.connections.map((c) => c.servername)).toEqual(['orders.internal']);
    expect(up.tcp).toBe(1);
  });
});

describe('sessions and ALPN', () => {
  it('TLS sessions are resumed on new connections (and counted), with the identity verified', async () => {
    const up = await upstream({ server: certs.orders!, clientCa: ca.cert, closeEvery: 1 });
    const gw = await gateway({ orders: upstreamConfig([up.url]) });
    for (let i = 0; i < 5; i++) expect((await get(gw, `/s/${i}`)).status).toBe(200);
    expect(up.connections.map((c) => c.resumed)).toEqual([false, true, true, true, true]);
    expect(
      await metric(gw, 'peregrine_upstream_tls_handshakes_total', { upstream: 'orders', session: 'new' }),
    ).toBe(1);
    expect(
      await metric(gw, 'peregrine_upstream_tls_handshakes_total', { upstream: 'orders', session: 'resumed' }),
    ).toBe(4);
  });

  it('http1 (the default) offers only HTTP/1.1, even to an upstream that prefers h2', async () => {
    const up = await upstream({ server: certs.orders!, clientCa: ca.cert, h2: true });
    const gw = await gateway({ orders: upstreamConfig([up.url]) });
    expect((await get(gw)).status).toBe(200);
    expect(up.connections[0]!.alpn).toBe('http/1.1');
    expect(up.versions).toEqual(['1.1']);
  });

  it('protocol h2 speaks HTTP/2 to an upstream that says it does: requests and bodies go through', async () => {
    const up = await upstream({ server: certs.orders!, clientCa: ca.cert, h2: true, allowHTTP1: false });
    const gw = await gateway({ orders: upstreamConfig([up.url], { protocol: 'h2' }) });
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${gw.url}/h2/${i}`, { method: 'POST', body: `body-${i}` });
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ path: `/h2/${i}`, body: `body-${i}` });
    }
    expect(up.connections.map((c) => c.alpn)).toEqual(['h2']);
    expect(up.versions).toEqual(['2.0', '2.0', '2.0']);
  });

  it('an h2-only upstream refuses http1: a handshake failure, not a hang', async () => {
    const up = await upstream({ server: certs.orders!, clientCa: ca.cert, h2: true, allowHTTP1: false });
    const gw = await gateway({ orders: upstreamConfig([up.url], { retries: { maxAttempts: 1 } }) });
    const res = await get(gw);
    expect(res.status).toBe(502);
    expect(up.requests).toBe(0);
  });
});

describe('rotation', () => {
  it('a client certificate rotated under load: zero failed requests, new connections present it, pools and open connections stay', async () => {
    const rotating = writeCertFiles(certs.gateway!, ca.cert);
    // Every 30th response closes its connection, so new connections keep being made.
    const up = await upstream({ server: certs.orders!, clientCa: ca.cert, closeEvery: 30 });
    const gw = await gateway({
      orders: upstreamConfig([up.url], {
        tls: { ca: rotating.ca, cert: rotating.cert, key: rotating.key, identity: { expect: [ORDERS] } },
        pool: { connections: 4 },
      }),
    });
    const pool = gw.gateway.store.current.clusters.get('orders')!.endpoints[0]!.pool;
    let stop = false;
    const failures: string[] = [];
    const worker = async (w: number): Promise<void> => {
      for (let i = 0; !stop; i++) {
        const res = await get(gw, `/load/${w}/${i}`);
        if (res.status !== 200) failures.push(`${res.status} ${res.headers.get('x-peregrine-reason')}`);
        await res.arrayBuffer();
      }
    };
    const workers = [0, 1, 2, 3].map(worker);
    try {
      await until('traffic on the old certificate', () => up.requests >= 60);
      // The key first, then the certificate (cert-manager's order); the pair is loaded as one set.
      replaceAtomically(rotating.key, certs.gateway2!.key);
      replaceAtomically(rotating.cert, certs.gateway2!.cert);
      await until(
        'the reload',
        async () =>
          (await metric(gw, 'peregrine_upstream_tls_certificate_reloads_total', {
            upstream: 'orders',
            outcome: 'success',
          })) === 1,
      );
      const reloadedAt = performance.now();
      const open = up.connections.filter((c) => c.requests % 30 !== 0);
      const servedAtReload = new Map(open.map((c) => [c, c.requests]));
      await until('new connections with the new certificate, old ones still serving', () => {
        const fresh = up.connections.filter((c) => c.at > reloadedAt && c.requests > 0);
        const oldServing = [...servedAtReload].some(([c, n]) => c.requests > n);
        return fresh.length >= 2 && oldServing;
      });
    } finally {
      stop = true;
      await Promise.all(workers);
    }

    expect(failures).toEqual([]);
    // Every connection made after the reload presented the new certificate (no old session resumed).
    const reloadedAt = up.connections.findIndex((c) => c.clientSerial === certs.gateway2!.serial);
    const after = up.connections.slice(reloadedAt);
    expect(after.length).toBeGreaterThanOrEqual(2);
    for (const c of after) expect(c.clientSerial).toBe(certs.gateway2!.serial);
    expect(up.connections.slice(0, reloadedAt).every((c) => c.clientSerial === certs.gateway!.serial)).toBe(
      true,
    );
    // The pool was not replaced.
    expect(gw.gateway.store.current.clusters.get('orders')!.endpoints[0]!.pool).toBe(pool);
    const reload = gw.logs.lines().find((l) => l.msg === 'upstream TLS certificate reloaded');
    expect(reload).toMatchObject({ upstream: 'orders', trigger: 'file', serial: certs.gateway2!.serial });
  });

  it('a bad set is rejected and the current certificate stays; SIGHUP reloads unwatched files', async () => {
    const rotating = writeCertFiles(certs.gateway!, ca.cert);
    const up = await upstream({ server: certs.orders!, clientCa: ca.cert });
    const gw = await gateway({
      orders: upstreamConfig([up.url], {
        tls: {
          ca: rotating.ca,
          cert: rotating.cert,
          key: rotating.key,
          identity: { expect: [ORDERS] },
          watch: false,
        },
      }),
    });
    replaceAtomically(rotating.key, certs.payments!.key);
    gw.gateway.reloadCertificates('signal');
    expect(await metric(gw, 'peregrine_upstream_tls_certificate_reloads_total', { outcome: 'failure' })).toBe(
      1,
    );
    expect(
      gw.logs
        .lines()
        .find(
          (l) => l.msg === 'upstream TLS certificate reload rejected; the previous certificate keeps serving',
        ),
    ).toMatchObject({
      upstream: 'orders',
      trigger: 'signal',
      error: `key ${rotating.key} does not match certificate ${rotating.cert}`,
    });
    expect((await get(gw)).status).toBe(200);
    expect(up.connections.at(-1)!.clientSerial).toBe(certs.gateway!.serial);

    replaceAtomically(rotating.key, certs.gateway2!.key);
    replaceAtomically(rotating.cert, certs.gateway2!.cert);
    gw.gateway.reloadCertificates('signal');
    expect(await metric(gw, 'peregrine_upstream_tls_certificate_reloads_total', { outcome: 'success' })).toBe(
      1,
    );
  });
});

describe('configuration', () => {
  it('a reload naming an unreadable upstream CA is rejected at its key; the last good config keeps serving', async () => {
    const up = await upstream({ server: certs.orders!, clientCa: ca.cert });
    const input = { orders: upstreamConfig([up.url]) };
    const gw = await gateway(input, { asFile: true });
    writeConfig(gw.configFile!, {
      upstreams: {
        orders: upstreamConfig([up.url], { tls: meshTls({ ca: `${files.dir}/missing.crt` }) }),
      } as never,
      routes: [{ name: 'r', upstream: 'orders' }] as never,
    });
    const result = await gw.gateway.reload('test');
    expect(result.ok).toBe(false);
    if (!result.ok)
      expect(result.failure.issues).toMatchObject([
        {
          path: 'upstreams.orders.tls.ca',
          message: `upstream orders: ca ${files.dir}/missing.crt: cannot read (ENOENT)`,
        },
      ]);
    expect((await get(gw)).status).toBe(200);
  });

  it('refuses tls toward an http:// endpoint, and h2 without TLS', async () => {
    await expect(
      startGateway({
        upstreams: { u: { endpoints: ['http://127.0.0.1:1'], tls: { ca: files.ca } } } as never,
      }),
    ).rejects.toThrow(/tls applies to https:\/\/ endpoints/);
    await expect(
      startGateway({ upstreams: { u: { endpoints: ['http://127.0.0.1:1'], protocol: 'h2' } } as never }),
    ).rejects.toThrow(/h2c/);
  });
});
