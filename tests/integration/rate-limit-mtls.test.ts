/**
 * Rate limits keyed by the verified mTLS identity: one budget per client certificate identity
 * whatever connection or address it comes from, a request without a certificate handled by the
 * policy's missing-key rule, and identities exempted by pattern.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CertFiles,
  createTestPki,
  type IssuedCert,
  removeCertFiles,
  type TestPki,
  writeCertFiles,
} from '../helpers/certs.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { type ClientTls, clientTls, httpsFetch } from '../helpers/tls-client.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let pki: TestPki;
let files: CertFiles;
let up: TestUpstream;
let gw: TestGateway;

beforeAll(async () => {
  pki = await createTestPki();
  files = writeCertFiles(pki.server, pki.ca.cert);
  up = await startUpstream();
  gw = await startGateway({
    listeners: [
      {
        name: 'edge',
        address: '127.0.0.1:0',
        tls: { cert: files.cert, key: files.key, clientAuth: 'optional', clientCa: files.ca },
      },
    ],
    policies: {
      perIdentity: {
        kind: 'rate_limit',
        limits: [{ points: 2, duration: '60s' }],
        limitBy: 'identity',
        ifMissing: 'reject',
      },
      opsExempt: {
        kind: 'rate_limit',
        limits: [{ points: 1, duration: '60s' }],
        limitBy: 'none',
        exempt: { identities: ['spiffe://prod.example/ns/payments/*'] },
      },
    } as never,
    upstreams: { echo: { endpoints: [up.url] } },
    routes: [
      { name: 'byIdentity', match: { path: '/by-identity' }, upstream: 'echo', policies: ['perIdentity'] },
      { name: 'exempting', match: { path: '/exempting' }, upstream: 'echo', policies: ['opsExempt'] },
    ],
  });
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
  removeCertFiles();
});

function as(cert?: IssuedCert): ClientTls {
  return clientTls(pki.ca.cert, cert);
}

async function statuses(path: string, cert: IssuedCert | undefined, n: number): Promise<number[]> {
  const out: number[] = [];
  // Each request on a new TLS connection: the identity, not the connection, is counted.
  for (let i = 0; i < n; i++) out.push((await httpsFetch(gw.port, path, as(cert))).status);
  return out;
}

describe('keyed by the mTLS identity', () => {
  it('gives each verified identity its own budget, across connections', async () => {
    expect(await statuses('/by-identity', pki.payments, 3)).toEqual([200, 200, 429]);
    expect(await statuses('/by-identity', pki.orders, 3)).toEqual([200, 200, 429]);
  });

  it('refuses a request without a client certificate under ifMissing: reject', async () => {
    const res = await httpsFetch(gw.port, '/by-identity', as());
    expect(res.status).toBe(403);
    expect(JSON.parse(res.body)).toMatchObject({ code: 'RATE_LIMIT_KEY_MISSING', policy: 'perIdentity' });
  });

  it('never counts an exempt identity', async () => {
    expect(await statuses('/exempting', pki.payments, 3)).toEqual([200, 200, 200]);
    expect(await statuses('/exempting', pki.orders, 2)).toEqual([200, 429]);
  });
});
