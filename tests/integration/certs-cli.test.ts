/**
 * `peregrine certs`: a development CA and X.509-SVIDs for services, checked as certificates (SANs,
 * constraints, usages, chain, validity, file modes) and used for real: a gateway and an upstream
 * speak mTLS with them, and reissuing a certificate rotates it under a running gateway.
 */
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runCerts } from '../../src/cli/certs.ts';
import { expectedIdentity } from '../../src/tls/spiffe.ts';
import { verifySvid } from '../../src/tls/svid.ts';
import { readCertificateFacts } from '../../src/tls/x509-der.ts';
import { startGateway } from '../helpers/gateway.ts';
import { metricValue, scrape } from '../helpers/tls-client.ts';
import { startTlsUpstream } from '../helpers/tls-upstream.ts';
import { until } from '../helpers/until.ts';

let root: string;
let ca: string;

async function certs(...argv: string[]): Promise<{ code: number; stdout: string[]; stderr: string[] }> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const code = await runCerts(argv, { stdout: (s) => stdout.push(s), stderr: (s) => stderr.push(s) });
  return { code, stdout, stderr };
}

function cert(file: string): X509Certificate {
  return new X509Certificate(readFileSync(file));
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'peregrine-certs-'));
  ca = join(root, 'ca');
  expect((await certs('init', '--dir', ca, '--trust-domain', 'prod.example')).code).toBe(0);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const opened: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.close();
});

describe('peregrine certs init', () => {
  it('makes a CA of the trust domain: a signing certificate whose SPIFFE ID has no path, its key 0600', () => {
    const c = cert(join(ca, 'ca.crt'));
    const facts = readCertificateFacts(c.raw);
    expect(facts).toMatchObject({
      ca: true,
      keyUsage: { keyCertSign: true, crlSign: true, digitalSignature: false },
      sans: { uris: ['spiffe://prod.example'] },
    });
    expect(c.verify(c.publicKey)).toBe(true);
    expect(statSync(join(ca, 'ca.key')).mode & 0o777).toBe(0o600);
    const days = (c.validToDate.getTime() - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(364);
    expect(days).toBeLessThan(366);
  });

  it('refuses to replace a CA without --force, and bad input, with exit 2', async () => {
    expect(await certs('init', '--dir', ca)).toMatchObject({
      code: 2,
      stderr: [
        `peregrine certs init: ${ca} already holds a CA; --force replaces it (its certificates then stop verifying)`,
      ],
    });
    expect((await certs('init', '--dir', join(root, 'x'), '--trust-domain', 'Prod.Example')).code).toBe(2);
    expect((await certs('init', '--dir', join(root, 'y'), '--ttl', 'forever')).code).toBe(2);
    expect((await certs('init', '--dir', join(root, 'z'), '--bogus')).code).toBe(2);
  });
});

describe('peregrine certs issue', () => {
  it('issues an X.509-SVID: one URI SAN spiffe://<td>/ns/<ns>/sa/<service>, leaf, serverAuth and clientAuth, chained to the CA', async () => {
    const res = await certs(
      'issue',
      '--service',
      'orders',
      '--namespace',
      'shop',
      '--ttl',
      '2h',
      '--dir',
      ca,
    );
    expect(res.code).toBe(0);
    const dir = join(ca, 'shop', 'orders');
    expect(res.stdout[0]).toContain(`spiffe://prod.example/ns/shop/sa/orders: ${join(dir, 'tls.crt')}`);
    const leaf = cert(join(dir, 'tls.crt'));
    const caCert = cert(join(ca, 'ca.crt'));
    expect(leaf.checkIssued(caCert)).toBe(true);
    expect(leaf.verify(caCert.publicKey)).toBe(true);
    expect(readCertificateFacts(leaf.raw)).toEqual({
      sans: { dns: [], uris: ['spiffe://prod.example/ns/shop/sa/orders'], ips: [], emails: [] },
      ca: false,
      keyUsage: { digitalSignature: true, keyCertSign: false, crlSign: false },
    });
    // Node names the extended key usages by OID: serverAuth, clientAuth.
    expect([...(leaf.keyUsage ?? [])].sort()).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    const hours = (leaf.validToDate.getTime() - Date.now()) / 3_600_000;
    expect(hours).toBeGreaterThan(1.99);
    expect(hours).toBeLessThanOrEqual(2);
    expect(
      verifySvid(
        leaf.raw,
        expectedIdentity({ expectPattern: 'spiffe://prod.example/ns/*/sa/{service}' }, 'orders'),
      ),
    ).toBe('spiffe://prod.example/ns/shop/sa/orders');
    expect(statSync(join(dir, 'tls.key')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(dir, 'ca.crt'), 'utf8')).toBe(readFileSync(join(ca, 'ca.crt'), 'utf8'));
  });

  it('refuses what it cannot issue, with exit 2 and the reason', async () => {
    const cases: [string[], string][] = [
      [['--service', 'Orders'], '--service: "Orders" must be lower-case letters, digits, . - _ (at most 63)'],
      [['--namespace', 'shop'], '--service is required'],
      [['--service', 'orders', '--ttl', '100000h'], 'the certificate would outlive its CA'],
      [['--service', 'orders', '--dns', 'a b'], '--dns: "a b" is not a DNS name'],
    ];
    for (const [args, message] of cases) {
      const res = await certs('issue', ...args, '--dir', ca);
      expect(res.code).toBe(2);
      expect(res.stderr[0]).toContain(message);
    }
    const none = await certs('issue', '--service', 'orders', '--dir', join(root, 'none'));
    expect(none.stderr[0]).toContain('not found; create a CA first: peregrine certs init');
  });

  it('runs from the command line (peregrine certs, loaded on demand)', () => {
    const out = join(root, 'cli-out');
    const result = spawnSync(
      process.execPath,
      [
        'src/main.ts',
        'certs',
        'issue',
        '--service',
        'billing',
        '--dir',
        ca,
        '--out',
        out,
        '--dns',
        'billing.internal',
      ],
      { encoding: 'utf8', timeout: 20_000 },
    );
    expect([result.status, result.stderr]).toEqual([0, '']);
    expect(readCertificateFacts(cert(join(out, 'tls.crt')).raw).sans).toMatchObject({
      uris: ['spiffe://prod.example/ns/default/sa/billing'],
      dns: ['billing.internal'],
    });
  });
});

describe('the certificates in a mesh', () => {
  it('an upstream and a gateway speak mTLS with them, and reissuing rotates the gateway’s certificate', async () => {
    expect((await certs('issue', '--service', 'orders', '--namespace', 'shop', '--dir', ca)).code).toBe(0);
    expect((await certs('issue', '--service', 'gateway', '--namespace', 'edge', '--dir', ca)).code).toBe(0);
    const orders = join(ca, 'shop', 'orders');
    const mine = join(ca, 'edge', 'gateway');
    const serverCert = readFileSync(join(orders, 'tls.crt'), 'utf8');
    const up = await startTlsUpstream({
      server: { cert: serverCert, key: readFileSync(join(orders, 'tls.key'), 'utf8') },
      clientCa: readFileSync(join(ca, 'ca.crt'), 'utf8'),
      closeEvery: 1,
    });
    opened.push(up);
    const gw = await startGateway({
      upstreams: {
        orders: {
          endpoints: [up.url],
          tls: {
            ca: join(mine, 'ca.crt'),
            cert: join(mine, 'tls.crt'),
            key: join(mine, 'tls.key'),
            identity: { expectPattern: 'spiffe://prod.example/ns/*/sa/{service}' },
          },
        },
      } as never,
      routes: [{ name: 'r', upstream: 'orders' }],
    });
    opened.push(gw);
    expect((await fetch(`${gw.url}/a`)).status).toBe(200);
    const first = cert(join(mine, 'tls.crt')).serialNumber;
    expect(up.connections.at(-1)).toMatchObject({
      clientSerial: first,
      clientUris: ['spiffe://prod.example/ns/edge/sa/gateway'],
    });

    expect((await certs('issue', '--service', 'gateway', '--namespace', 'edge', '--dir', ca)).code).toBe(0);
    const second = cert(join(mine, 'tls.crt')).serialNumber;
    expect(second).not.toBe(first);
    await until(
      'the gateway loaded the reissued certificate',
      async () =>
        metricValue(await scrape(gw.adminUrl), 'peregrine_upstream_tls_certificate_reloads_total', {
          outcome: 'success',
        }) === 1,
    );
    expect((await fetch(`${gw.url}/b`)).status).toBe(200);
    expect(up.connections.at(-1)!.clientSerial).toBe(second);
  });
});
