/**
 * Several certificates on one TLS listener, chosen by the client's SNI name (`tls.certificates`):
 * exact DNS SANs, one-label wildcards, the default certificate for everything else and for
 * clients without SNI; a reload swaps the SNI certificates too; `peregrine validate`-style checks
 * name the entry that is wrong.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkCertificateFiles } from '../../src/tls/listener-certificates.ts';
import { TlsSchema } from '../../src/tls/schema.ts';
import {
  type CertFiles,
  createTestPki,
  type IssuedCert,
  removeCertFiles,
  replaceAtomically,
  type TestPki,
  writeCertFiles,
} from '../helpers/certs.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { httpsFetch, metricValue, scrape } from '../helpers/tls-client.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let pki: TestPki;
let main: CertFiles;
let api: CertFiles;
let wild: CertFiles;
let up: TestUpstream;
let gw: TestGateway;

beforeAll(async () => {
  pki = await createTestPki();
  main = writeCertFiles(pki.server, pki.ca.cert);
  api = writeCertFiles(
    await pki.ca.issue({ cn: 'api', dns: ['api.example.test', 'API2.example.test'] }),
    pki.ca.cert,
  );
  wild = writeCertFiles(await pki.ca.issue({ cn: 'wild', dns: ['*.apps.example.test'] }), pki.ca.cert);
  up = await startUpstream();
  gw = await startGateway({
    listeners: [
      {
        name: 'edge',
        address: '127.0.0.1:0',
        tls: {
          cert: main.cert,
          key: main.key,
          certificates: [
            { cert: api.cert, key: api.key },
            { cert: wild.cert, key: wild.key },
          ],
        },
      },
    ],
    upstreams: { echo: { endpoints: [up.url] } },
    routes: [{ name: 'echo', upstream: 'echo' }],
  });
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
  removeCertFiles();
});

/** The subject CN of the certificate the gateway presents for `servername` (none: no SNI). */
function servedCn(servername: string | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: gw.port,
      ca: pki.ca.cert,
      ...(servername === undefined ? {} : { servername }),
      rejectUnauthorized: false,
    });
    socket.once('secureConnect', () => {
      const cn = socket.getPeerCertificate().subject?.CN;
      socket.destroy();
      resolve(String(cn));
    });
    socket.once('error', reject);
  });
}

describe('certificates chosen by SNI', () => {
  it('serves each name its certificate, and the default one to every other name and without SNI', async () => {
    const defaultCn = pki.server.x509.subject.match(/CN=([^\n]+)/)![1];
    expect(await servedCn('api.example.test')).toBe('api');
    expect(await servedCn('API.Example.TEST.')).toBe('api');
    expect(await servedCn('api2.example.test')).toBe('api');
    expect(await servedCn('one.apps.example.test')).toBe('wild');
    // A wildcard covers one label: not the apex, not two labels.
    expect(await servedCn('apps.example.test')).toBe(defaultCn);
    expect(await servedCn('a.b.apps.example.test')).toBe(defaultCn);
    expect(await servedCn('other.example.test')).toBe(defaultCn);
    expect(await servedCn(undefined)).toBe(defaultCn);
  });

  it('proxies requests over the SNI certificate, verified by the client', async () => {
    const res = await httpsFetch(gw.port, '/via-sni', { ca: pki.ca.cert, servername: 'api.example.test' });
    expect(res.status).toBe(200);
    expect(up.requests[up.requests.length - 1]!.url).toBe('/via-sni');
  });

  it('shows the SNI certificates on /v1/certs and exports their expiry', async () => {
    const certs = (await (await fetch(`${gw.adminUrl}/v1/certs`)).json()) as {
      listeners: { sni: { names: string[]; server: { serial: string } }[] }[];
    };
    const sni = certs.listeners[0]!.sni;
    expect(sni.map((s) => s.names)).toEqual([
      ['api.example.test', 'api2.example.test'],
      ['*.apps.example.test'],
    ]);
    const text = await scrape(gw.adminUrl);
    expect(
      metricValue(text, 'peregrine_tls_certificate_expiry_timestamp_seconds', {
        listener: 'edge',
        role: 'server',
        subject: 'CN=wild',
      }),
    ).toBeGreaterThan(Date.now() / 1000);
  });

  it('a reload swaps an SNI certificate; a bad one is refused and the previous keeps serving', async () => {
    const fresh: IssuedCert = await pki.ca.issue({ cn: 'api-renewed', dns: ['api.example.test'] });
    replaceAtomically(api.key, fresh.key);
    replaceAtomically(api.cert, fresh.cert);
    gw.gateway.reloadCertificates('test');
    expect(await servedCn('api.example.test')).toBe('api-renewed');

    // A certificate whose key is another's: the whole set is refused.
    const other = await pki.ca.issue({ cn: 'mismatch', dns: ['api.example.test'] });
    replaceAtomically(api.cert, other.cert);
    gw.gateway.reloadCertificates('test');
    expect(await servedCn('api.example.test')).toBe('api-renewed');
    const text = await scrape(gw.adminUrl);
    expect(
      metricValue(text, 'peregrine_tls_certificate_reloads_total', { listener: 'edge', outcome: 'failure' }),
    ).toBe(1);
    replaceAtomically(api.cert, fresh.cert);
  });
});

describe('certificates chosen by SNI with client certificates required', () => {
  it('verifies client certificates against clientCa whichever certificate the name selects', async () => {
    const local = await startGateway({
      listeners: [
        {
          name: 'mtls',
          address: '127.0.0.1:0',
          tls: {
            cert: main.cert,
            key: main.key,
            certificates: [{ cert: api.cert, key: api.key }],
            clientAuth: 'required',
            clientCa: main.ca,
          },
        },
      ],
      upstreams: { echo: { endpoints: [up.url] } },
      routes: [{ name: 'echo', upstream: 'echo' }],
    });
    try {
      const client = { ca: pki.ca.cert, servername: 'api.example.test' };
      const ok = await httpsFetch(local.port, '/mtls-sni', {
        ...client,
        cert: pki.payments.cert,
        key: pki.payments.key,
      });
      expect(ok.status).toBe(200);
      await expect(httpsFetch(local.port, '/mtls-sni', client)).rejects.toThrow();
      await expect(
        httpsFetch(local.port, '/mtls-sni', { ...client, cert: pki.foreign.cert, key: pki.foreign.key }),
      ).rejects.toThrow();
    } finally {
      await local.close();
    }
  });
});

describe('checks of tls.certificates', () => {
  it('names the entry and file of each problem', async () => {
    const noDns = writeCertFiles(await pki.ca.issue({ cn: 'no-dns', uris: ['spiffe://x/y'] }), pki.ca.cert);
    const dupe = writeCertFiles(await pki.ca.issue({ cn: 'dupe', dns: ['api.example.test'] }), pki.ca.cert);
    const badKey = join(noDns.dir, 'other.key');
    writeFileSync(badKey, (await pki.ca.issue({ cn: 'x', dns: ['x.test'] })).key);
    const cfg = TlsSchema.parse({
      cert: main.cert,
      key: main.key,
      certificates: [
        { cert: api.cert, key: api.key },
        { cert: noDns.cert, key: noDns.key },
        { cert: dupe.cert, key: dupe.key },
        { cert: wild.cert, key: badKey },
        { cert: join(noDns.dir, 'missing.crt'), key: wild.key },
      ],
    });
    const problems = checkCertificateFiles(cfg).map((p) => [p.setting, p.message]);
    expect(problems).toEqual([
      ['certificates.1.cert', expect.stringMatching(/no DNS subject alternative name/)],
      [
        'certificates.2.cert',
        expect.stringMatching(/serves api\.example\.test, which certificates\[0\] already serves/),
      ],
      ['certificates.3.key', expect.stringMatching(/does not match certificate/)],
      ['certificates.4.cert', expect.stringMatching(/cannot read \(ENOENT\)/)],
    ]);
  });
});
