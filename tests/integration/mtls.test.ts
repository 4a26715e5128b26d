/**
 * mTLS: client certificates verified against the listener's CA bundle, identity taken only from a
 * verified chain and read structurally (a tricky SAN cannot pose as another identity), route
 * allow-lists, X-Forwarded-Client-Cert to the upstream (client-sent values removed unless from a
 * trusted proxy), and every refusal counted with a reason.
 */
import type { OutgoingHttpHeaders } from 'node:http2';
import { Client } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import {
  type CertFiles,
  createTestPki,
  type IssuedCert,
  ORDERS_ID,
  PAYMENTS_ID,
  removeCertFiles,
  type TestPki,
  TRICKY_DNS,
  TRICKY_URI,
  writeCertFiles,
} from '../helpers/certs.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import {
  type ClientTls,
  clientTls,
  h2Request,
  h2Session,
  httpsFetch,
  metricValue,
  scrape,
} from '../helpers/tls-client.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let pki: TestPki;
let files: CertFiles;
let up: TestUpstream;
let gw: TestGateway;
let ports: { strict: number; opt: number; trusted: number };

beforeAll(async () => {
  pki = await createTestPki();
  files = writeCertFiles(pki.server, pki.ca.cert);
  up = await startUpstream();
  const tls = (clientAuth: 'optional' | 'required') => ({
    cert: files.cert,
    key: files.key,
    clientAuth,
    clientCa: files.ca,
  });
  gw = await startGateway({
    listeners: [
      { name: 'strict', address: '127.0.0.1:0', tls: tls('required') },
      { name: 'opt', address: '127.0.0.1:0', tls: tls('optional') },
      { name: 'trusted', address: '127.0.0.1:0', tls: tls('required'), trustedProxies: ['127.0.0.0/8'] },
    ],
    upstreams: { echo: { endpoints: [up.url] } },
    routes: [
      {
        name: 'payments',
        match: { path: '/payments' },
        upstream: 'echo',
        identity: { allow: ['spiffe://prod.example/ns/payments/*'] },
      },
      { name: 'exact', match: { path: '/exact' }, upstream: 'echo', identity: { allow: [PAYMENTS_ID] } },
      {
        name: 'admin',
        match: { path: '/admin' },
        upstream: 'echo',
        identity: { allow: ['spiffe://prod.example/ns/admin/*'] },
      },
      { name: 'open', match: { path: '/' }, upstream: 'echo' },
    ],
  });
  ports = {
    strict: gw.gateway.address('strict').port,
    opt: gw.gateway.address('opt').port,
    trusted: gw.gateway.address('trusted').port,
  };
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
  removeCertFiles();
});

function as(cert?: IssuedCert): ClientTls {
  return clientTls(pki.ca.cert, cert);
}

interface Echo {
  url: string;
  headers: Record<string, string | undefined>;
}

function echoed(body: string): Echo {
  return JSON.parse(body) as Echo;
}

/** X-Forwarded-Client-Cert → elements → [key, value] pairs, honouring quoted strings. */
function parseXfcc(header: string): [string, string][][] {
  const elements: [string, string][][] = [];
  let pairs: [string, string][] = [];
  let key = '';
  let value = '';
  let inKey = true;
  let quoted = false;
  const endPair = () => {
    if (key) pairs.push([key, value]);
    key = '';
    value = '';
    inKey = true;
  };
  for (let i = 0; i < header.length; i++) {
    const c = header[i]!;
    if (quoted) {
      if (c === '\\') value += header[++i] ?? '';
      else if (c === '"') quoted = false;
      else value += c;
    } else if (c === '"' && !inKey) quoted = true;
    else if (c === '=' && inKey) inKey = false;
    else if (c === ';') endPair();
    else if (c === ',') {
      endPair();
      elements.push(pairs);
      pairs = [];
    } else if (inKey) key += c;
    else value += c;
  }
  endPair();
  elements.push(pairs);
  return elements;
}

function subjectOf(cert: IssuedCert): string {
  return cert.x509.subject.split('\n').reverse().join(',');
}

async function counter(name: string, labels: Record<string, string>): Promise<number> {
  return metricValue(await scrape(gw.adminUrl), name, labels) ?? 0;
}

/** Poll a counter until it reaches `want` (the server may record a refusal after the client saw it). */
async function waitForCounter(name: string, labels: Record<string, string>, want: number): Promise<number> {
  let value = 0;
  for (let i = 0; i < 100; i++) {
    value = await counter(name, labels);
    if (value >= want) return value;
    await new Promise((r) => setTimeout(r, 20));
  }
  return value;
}

async function expectRefused(
  port: number,
  listener: string,
  client: ClientTls,
  reason: string,
  clientCertFailure = true,
): Promise<void> {
  const failures = { listener, reason };
  const handshakeBefore = await counter('peregrine_tls_handshake_failures_total', failures);
  const verifyBefore = await counter('peregrine_tls_client_cert_verification_failures_total', failures);
  const requestsBefore = up.requests.length;
  const outcome = await httpsFetch(port, '/', client).then(
    (r) => r.status,
    (e: Error) => e,
  );
  expect(outcome).toBeInstanceOf(Error);
  expect(await waitForCounter('peregrine_tls_handshake_failures_total', failures, handshakeBefore + 1)).toBe(
    handshakeBefore + 1,
  );
  const verifyAfter = await counter('peregrine_tls_client_cert_verification_failures_total', failures);
  expect(verifyAfter).toBe(verifyBefore + (clientCertFailure ? 1 : 0));
  expect(up.requests.length).toBe(requestsBefore);
}

describe('mTLS with clientAuth required', () => {
  it('forwards the verified identity in X-Forwarded-Client-Cert and logs it', async () => {
    const res = await httpsFetch(ports.strict, '/payments/charge', as(pki.payments), {
      headers: { 'x-forwarded-client-cert': 'By=spiffe://evil;URI=spiffe://prod.example/ns/admin/sa/root' },
    });
    expect(res.status).toBe(200);
    const xfcc = echoed(res.body).headers['x-forwarded-client-cert']!;
    // Only the gateway's element: the client's header was removed.
    expect(xfcc).not.toContain('evil');
    expect(parseXfcc(xfcc)).toEqual([
      [
        ['By', 'strict'],
        ['Hash', pki.payments.sha256],
        ['Subject', subjectOf(pki.payments)],
        ['URI', PAYMENTS_ID],
      ],
    ]);
    const line = gw.logs.access().find((l) => l.path === '/payments/charge');
    expect(line).toMatchObject({
      listener: 'strict',
      route: 'payments',
      status: 200,
      clientIdentity: PAYMENTS_ID,
    });
    expect(JSON.stringify(line)).not.toContain('BEGIN CERTIFICATE');
  });

  it('enforces route allow-lists: prefix and exact patterns, 403 problem+json otherwise', async () => {
    const denied = await httpsFetch(ports.strict, '/payments/charge', as(pki.orders));
    expect(denied.status).toBe(403);
    expect(denied.headers['content-type']).toBe('application/problem+json');
    expect(JSON.parse(denied.body)).toMatchObject({ code: 'IDENTITY_DENIED', status: 403 });
    expect((await httpsFetch(ports.strict, '/exact', as(pki.payments))).status).toBe(200);
    expect((await httpsFetch(ports.strict, '/exact', as(pki.orders))).status).toBe(403);
    // Routes without an allow-list take any verified client, and still get its identity.
    const open = await httpsFetch(ports.strict, '/anything', as(pki.orders));
    expect(open.status).toBe(200);
    expect(parseXfcc(echoed(open.body).headers['x-forwarded-client-cert']!)[0]).toContainEqual([
      'URI',
      ORDERS_ID,
    ]);
    const text = await scrape(gw.adminUrl);
    const decision = (route: string, result: string, reason: string) =>
      metricValue(text, 'peregrine_auth_decisions_total', { route, provider: '_mtls', result, reason });
    expect(decision('payments', 'allow', 'ok')).toBeGreaterThanOrEqual(1);
    expect(decision('payments', 'deny', 'identity_denied')).toBeGreaterThanOrEqual(1);
    expect(decision('exact', 'deny', 'identity_denied')).toBe(1);
  });

  it('carries the identity on HTTP/2 streams too (cached per connection)', async () => {
    const session = await h2Session(ports.strict, as(pki.payments));
    try {
      const headers: OutgoingHttpHeaders = { ':method': 'GET', ':path': '/payments/h2' };
      const results = await Promise.all([1, 2, 3].map(() => h2Request(session, headers)));
      for (const r of results) {
        expect(r.status).toBe(200);
        expect(parseXfcc(echoed(r.body).headers['x-forwarded-client-cert']!)[0]).toContainEqual([
          'Hash',
          pki.payments.sha256,
        ]);
      }
      const denied = await h2Session(ports.strict, as(pki.orders));
      expect((await h2Request(denied, headers)).status).toBe(403);
      denied.close();
    } finally {
      session.close();
    }
  });

  it("never gives one connection's identity to another's requests: two peers interleaved on keep-alive", async () => {
    // One kept-alive connection per peer (undici's Client holds one), their requests alternating
    // and overlapping, all forwarded over the gateway's one upstream pool.
    const client = (cert: IssuedCert) =>
      new Client(`https://127.0.0.1:${ports.strict}`, {
        connect: { ca: pki.ca.cert, cert: cert.cert, key: cert.key, servername: 'localhost' },
      });
    const peers = [
      { cert: pki.payments, client: client(pki.payments), connects: 0 },
      { cert: pki.orders, client: client(pki.orders), connects: 0 },
    ];
    for (const p of peers)
      p.client.on('connect', () => {
        p.connects++;
      });
    try {
      for (let round = 0; round < 4; round++) {
        const sent = [];
        for (let i = 0; i < 6; i++) {
          const peer = peers[i % 2]!;
          sent.push(
            peer.client
              .request({
                path: `/who/${round}/${i}`,
                method: 'GET',
                // Forged by the client: never forwarded, whoever sends it.
                headers: { 'x-forwarded-client-cert': `Hash=${peers[(i + 1) % 2]!.cert.sha256}` },
              })
              .then(async (r) => ({ peer, status: r.statusCode, body: await r.body.text() })),
          );
        }
        for (const { peer, status, body } of await Promise.all(sent)) {
          expect(status).toBe(200);
          const elements = parseXfcc(echoed(body).headers['x-forwarded-client-cert']!);
          expect(elements).toHaveLength(1);
          expect(elements[0]).toContainEqual(['Hash', peer.cert.sha256]);
          expect(elements[0]).toContainEqual(['Subject', subjectOf(peer.cert)]);
        }
      }
      // Each peer's requests came over its one connection: the identity was read per connection.
      for (const p of peers) expect(p.connects).toBe(1);
    } finally {
      await Promise.all(peers.map((p) => p.client.close()));
    }
  });

  it('is not fooled by a tricky SAN: a DNS name that looks like a URI entry, a URI with , and ;', async () => {
    const res = await httpsFetch(ports.strict, '/who', as(pki.tricky));
    expect(res.status).toBe(200);
    const xfcc = echoed(res.body).headers['x-forwarded-client-cert']!;
    const [element, ...more] = parseXfcc(xfcc);
    expect(more).toEqual([]);
    // The URI keeps its `,` and `;` inside quotes; the malformed DNS name is left out; one By.
    expect(element).toEqual([
      ['By', 'strict'],
      ['Hash', pki.tricky.sha256],
      ['Subject', 'CN=tricky'],
      ['URI', TRICKY_URI],
    ]);
    expect(element!.filter(([k]) => k === 'By')).toHaveLength(1);
    // The identity is the URI as written, not the SPIFFE ID hidden in the DNS name.
    const line = gw.logs.access().find((l) => l.path === '/who');
    expect(line?.clientIdentity).toBe(TRICKY_URI);
    expect(TRICKY_DNS).toContain('spiffe://prod.example/ns/admin/sa/root');
    expect((await httpsFetch(ports.strict, '/admin/x', as(pki.tricky))).status).toBe(403);
    expect((await httpsFetch(ports.strict, '/payments/x', as(pki.tricky))).status).toBe(403);
  });

  it('takes the subject DN as the identity of a certificate without SANs', async () => {
    const res = await httpsFetch(ports.strict, '/legacy', as(pki.subjectOnly));
    expect(res.status).toBe(200);
    const line = gw.logs.access().find((l) => l.path === '/legacy');
    expect(line?.clientIdentity).toBe(subjectOf(pki.subjectOnly));
    expect(line?.clientIdentity).toMatch(/CN=legacy-client/);
    expect((await httpsFetch(ports.strict, '/payments/x', as(pki.subjectOnly))).status).toBe(403);
  });

  it('refuses no certificate, an untrusted CA, expired, not yet valid and wrong EKU, with reasons', async () => {
    await expectRefused(ports.strict, 'strict', as(), 'no_cert');
    await expectRefused(ports.strict, 'strict', as(pki.foreign), 'unknown_ca');
    await expectRefused(ports.strict, 'strict', as(pki.expired), 'cert_expired');
    await expectRefused(ports.strict, 'strict', as(pki.notYetValid), 'cert_not_yet_valid');
    await expectRefused(ports.strict, 'strict', as(pki.serverAuthOnly), 'bad_purpose');
  });

  it('refuses a TLS 1.1 client even with a good certificate', async () => {
    await expectRefused(
      ports.strict,
      'strict',
      { ...as(pki.payments), minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' },
      'protocol_version',
      false,
    );
  });

  it('applies allow-lists to WebSocket upgrades', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((r) => wss.once('listening', r));
    wss.on('connection', (sock, req) => sock.send(String(req.headers['x-forwarded-client-cert'])));
    const port = (wss.address() as { port: number }).port;
    const local = await startGateway({
      listeners: [
        {
          name: 'ws',
          address: '127.0.0.1:0',
          tls: { cert: files.cert, key: files.key, clientAuth: 'required', clientCa: files.ca },
        },
      ],
      upstreams: { ws: { endpoints: [`http://127.0.0.1:${port}`] } },
      routes: [
        {
          name: 'ws',
          match: { path: '/ws' },
          upstream: 'ws',
          identity: { allow: ['spiffe://prod.example/ns/payments/*'] },
        },
      ],
    });
    try {
      const url = `wss://localhost:${local.port}/ws`;
      const ok = new WebSocket(url, { ca: pki.ca.cert, cert: pki.payments.cert, key: pki.payments.key });
      const first = await new Promise<string>((resolve, reject) => {
        ok.once('message', (m) => resolve(m.toString()));
        ok.once('error', reject);
      });
      expect(parseXfcc(first)[0]).toContainEqual(['URI', PAYMENTS_ID]);
      ok.close();
      const denied = new WebSocket(url, { ca: pki.ca.cert, cert: pki.orders.cert, key: pki.orders.key });
      const status = await new Promise<number>((resolve) =>
        denied.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)),
      );
      expect(status).toBe(403);
    } finally {
      await local.close();
      await new Promise((r) => wss.close(r));
    }
  });
});

describe('mTLS with clientAuth optional', () => {
  it('lets a client without a certificate in anonymously, but not onto identity routes', async () => {
    const anon = await httpsFetch(ports.opt, '/anon', as());
    expect(anon.status).toBe(200);
    expect(echoed(anon.body).headers['x-forwarded-client-cert']).toBeUndefined();
    const line = gw.logs.access().find((l) => l.path === '/anon');
    expect(line?.clientIdentity).toBeUndefined();
    const denied = await httpsFetch(ports.opt, '/payments/x', as());
    expect(denied.status).toBe(403);
    expect(JSON.parse(denied.body)).toMatchObject({ code: 'MTLS_REQUIRED' });
    // A client-sent XFCC never stands in for a certificate.
    const forged = await httpsFetch(ports.opt, '/anon2', as(), {
      headers: { 'x-forwarded-client-cert': `By=x;URI=${PAYMENTS_ID}` },
    });
    expect(echoed(forged.body).headers['x-forwarded-client-cert']).toBeUndefined();
  });

  it('authenticates a client with a valid certificate', async () => {
    const res = await httpsFetch(ports.opt, '/payments/x', as(pki.payments));
    expect(res.status).toBe(200);
    expect(parseXfcc(echoed(res.body).headers['x-forwarded-client-cert']!)[0]).toContainEqual(['By', 'opt']);
  });

  it('refuses a presented certificate that does not verify (never treated as anonymous)', async () => {
    await expectRefused(ports.opt, 'opt', as(pki.expired), 'cert_expired');
    await expectRefused(ports.opt, 'opt', as(pki.foreign), 'unknown_ca');
    await expectRefused(ports.opt, 'opt', as(pki.serverAuthOnly), 'bad_purpose');
  });

  it('refuses an HTTP/2 client whose certificate does not verify, before any session exists', async () => {
    const labels = { listener: 'opt', reason: 'cert_not_yet_valid' };
    const before = await counter('peregrine_tls_handshake_failures_total', labels);
    const outcome = await h2Session(ports.opt, as(pki.notYetValid))
      .then((session) => {
        session.on('error', () => {});
        return h2Request(session, { ':method': 'GET', ':path': '/' });
      })
      .then(
        (r) => r.status,
        (e: Error) => e,
      );
    expect(outcome).toBeInstanceOf(Error);
    expect(await waitForCounter('peregrine_tls_handshake_failures_total', labels, before + 1)).toBe(
      before + 1,
    );
    const text = await scrape(gw.adminUrl);
    expect(metricValue(text, 'peregrine_http2_sessions_closed_total', { listener: 'opt' })).toBeUndefined();
  });
});

describe('X-Forwarded-Client-Cert from a trusted proxy', () => {
  it('keeps the proxy element and appends the gateway element', async () => {
    const res = await httpsFetch(ports.trusted, '/via-lb', as(pki.payments), {
      headers: { 'x-forwarded-client-cert': 'By=spiffe://lb;URI=spiffe://prod.example/ns/web/sa/front' },
    });
    expect(res.status).toBe(200);
    const elements = parseXfcc(echoed(res.body).headers['x-forwarded-client-cert']!);
    expect(elements).toHaveLength(2);
    expect(elements[0]).toEqual([
      ['By', 'spiffe://lb'],
      ['URI', 'spiffe://prod.example/ns/web/sa/front'],
    ]);
    expect(elements[1]).toContainEqual(['By', 'trusted']);
    expect(elements[1]).toContainEqual(['URI', PAYMENTS_ID]);
    // The identity the gateway authorises is still its own peer's.
    const line = gw.logs.access().find((l) => l.path === '/via-lb');
    expect(line?.clientIdentity).toBe(PAYMENTS_ID);
  });
});
