import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigSchema, UpstreamSchema } from '../../../src/config/schema.ts';
import { Cluster } from '../../../src/dataplane/upstream/cluster.ts';
import { UpstreamTlsSchema } from '../../../src/tls/schema.ts';
import {
  checkUpstreamTlsFiles,
  UpstreamTlsLoadError,
  UpstreamTlsSet,
} from '../../../src/tls/upstream-tls.ts';
import {
  type CertFiles,
  type IssuedCert,
  removeCertFiles,
  replaceAtomically,
  TestCa,
  writeCertFiles,
} from '../../helpers/certs.ts';

const ID = 'spiffe://prod.example/ns/edge/sa/gateway';
let ca: TestCa;
let client: IssuedCert;
let client2: IssuedCert;
let files: CertFiles;

beforeAll(async () => {
  ca = await TestCa.create();
  [client, client2] = await Promise.all([ca.client(ID), ca.client(ID)]);
  files = writeCertFiles(client, ca.cert);
});
afterAll(() => removeCertFiles());

const cfg = (extra: Record<string, unknown> = {}) =>
  UpstreamTlsSchema.parse({ ca: files.ca, cert: files.cert, key: files.key, watch: false, ...extra });

describe('UpstreamTlsSet', () => {
  it('one UpstreamTls per upstream and settings, shared by its endpoints, closed by the last', () => {
    const set = new UpstreamTlsSet();
    const a = set.acquire('orders', cfg());
    expect(set.acquire('orders', cfg())).toBe(a);
    expect(set.acquire('payments', cfg())).not.toBe(a);
    expect(set.acquire('orders', cfg({ serverName: 'orders.internal' }))).not.toBe(a);
    expect(set.statuses().map((s) => s.upstream)).toEqual(['orders', 'payments', 'orders']);
    set.release(a);
    expect(set.statuses()).toHaveLength(3);
    set.release(a);
    expect(set.statuses().map((s) => s.serverName)).toEqual([null, 'orders.internal']);
  });

  it('an https upstream without a tls section: Node defaults, nothing loaded, nothing shown', () => {
    const set = new UpstreamTlsSet();
    const t = set.acquire('public', undefined);
    expect([t.context, t.generation, t.checkServerIdentity, set.statuses()]).toEqual([
      undefined,
      0,
      undefined,
      [],
    ]);
  });

  it('unusable files throw with the key they belong to', () => {
    const set = new UpstreamTlsSet();
    const missing = join(files.dir, 'nope.crt');
    expect(() => set.acquire('orders', cfg({ ca: missing }))).toThrow(UpstreamTlsLoadError);
    try {
      set.acquire('orders', cfg({ ca: missing }));
    } catch (err) {
      expect(err).toMatchObject({
        keyPath: 'upstreams.orders.tls.ca',
        message: `upstream orders: ca ${missing}: cannot read (ENOENT)`,
      });
    }
    const otherKey = join(files.dir, 'other.key');
    writeFileSync(otherKey, client2.key);
    expect(() => set.acquire('orders', cfg({ key: otherKey }))).toThrow(
      expect.objectContaining({ keyPath: 'upstreams.orders.tls.key' }),
    );
    expect(checkUpstreamTlsFiles(cfg({ ca: missing, key: otherKey })).map((p) => p.setting)).toEqual([
      'key',
      'ca',
    ]);
  });

  it('a reload swaps to a good set (new generation) and keeps the current one on a bad set', () => {
    const own = writeCertFiles(client, ca.cert);
    const t = new UpstreamTlsSet().acquire('orders', cfg({ ca: own.ca, cert: own.cert, key: own.key }));
    const context = t.context;
    replaceAtomically(own.key, client2.key);
    expect(t.reload('signal')).toBe(false);
    expect([t.generation, t.context]).toEqual([1, context]);
    expect(t.status()!.lastError?.message).toBe(`key ${own.key} does not match certificate ${own.cert}`);
    replaceAtomically(own.cert, client2.cert);
    expect(t.reload('signal')).toBe(true);
    expect(t.generation).toBe(2);
    expect(t.context).not.toBe(context);
    expect(t.status()).toMatchObject({
      client: { serial: client2.serial },
      reloads: { success: 1, failure: 1 },
    });
  });
});

describe('upstream tls schema', () => {
  const issues = (input: unknown) =>
    (UpstreamTlsSchema.safeParse(input).error?.issues ?? []).map((i) => `${i.path.join('.')}: ${i.message}`);

  it('cert and key together; identity needs ca; exactly one of expect and expectPattern', () => {
    expect(issues({ cert: 'a' })).toEqual([
      'key: cert and key come together (the client certificate and its private key)',
    ]);
    expect(issues({ identity: { expect: ['spiffe://td/x'] } })).toEqual([
      "ca: identity needs ca: a SPIFFE ID means something only under its trust domain's CA",
    ]);
    expect(issues({ ca: 'c', identity: {} })).toEqual([
      'identity: identity takes exactly one of expect and expectPattern',
    ]);
    expect(issues({ ca: 'c', identity: { expect: ['spiffe://td'] } })[0]).toMatch(
      /^identity\.expect\.0: expected a SPIFFE ID with a path/,
    );
    expect(issues({ ca: 'c', identity: { expectPattern: 'spiffe://td/ns/a*' } })[0]).toMatch(
      /^identity\.expectPattern: /,
    );
    expect(issues({ serverName: '10.0.0.1' })).toEqual([
      'serverName: an IP address is not a server name (SNI carries DNS names only)',
    ]);
    expect(UpstreamTlsSchema.parse({ ca: 'c' })).toMatchObject({
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.3',
      watch: true,
    });
  });

  it('tls and HTTP/2 need https:// endpoints', () => {
    const result = ConfigSchema.safeParse({
      listeners: [{ name: 'l', address: '127.0.0.1:0' }],
      upstreams: {
        a: { endpoints: ['https://a:1', 'http://b:1'], tls: { ca: 'c' } },
        b: { endpoints: ['http://b:1'], protocol: 'auto' },
        c: { endpoints: ['https://c:1'], protocol: 'h2', tls: { ca: 'c' } },
        d: { discovery: { dns: 'orders.internal', port: 8443 }, tls: { ca: 'c' } },
      },
    });
    expect(result.error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`)).toEqual([
      'upstreams.a.endpoints.1: tls applies to https:// endpoints; http://b:1 would be spoken to in clear',
      'upstreams.b.endpoints.0: protocol auto needs https:// endpoints (HTTP/2 without TLS, h2c, is not spoken)',
      'upstreams.d.discovery.protocol: tls applies to https:// endpoints; orders.internal (discovery.protocol: http) would be spoken to in clear',
    ]);
  });
});

describe('an upstream cluster and its TLS', () => {
  const https = (extra: Record<string, unknown>) =>
    UpstreamSchema.parse({ endpoints: ['https://127.0.0.1:1'], ...extra });

  it("loads the files with the cluster, even a discovered one that has no endpoint yet; {service} is the registry's service", async () => {
    const set = new UpstreamTlsSet();
    const cfg = https({
      endpoints: undefined,
      discovery: { registry: 'orders-svc' },
      tls: { ca: files.ca, identity: { expectPattern: 'spiffe://prod.example/ns/*/sa/{service}' } },
    });
    const cluster = new Cluster('orders', cfg, { tls: set });
    expect(cluster.endpoints).toEqual([]);
    expect(set.statuses()).toMatchObject([
      { upstream: 'orders', expectedIdentities: ['spiffe://prod.example/ns/*/sa/orders-svc'] },
    ]);
    const missing = { ...cfg, tls: { ...cfg.tls!, ca: join(files.dir, 'missing.crt') } };
    expect(() => new Cluster('orders', missing, { tls: set })).toThrow(
      expect.objectContaining({ keyPath: 'upstreams.orders.tls.ca' }),
    );
    await cluster.close();
    expect(set.statuses()).toEqual([]);
  });

  it('never uses a discovered plain http:// endpoint for an upstream that speaks TLS', async () => {
    const cluster = new Cluster(
      'orders',
      https({ endpoints: undefined, discovery: { registry: 'orders' }, tls: { ca: files.ca } }),
    );
    const change = cluster.applyEndpoints(
      [{ url: 'http://10.0.0.5:8080' }, { url: 'https://10.0.0.6:8443' }],
      'registry',
    );
    expect(change.added).toEqual(['https://10.0.0.6:8443']);
    expect(cluster.endpoints.map((e) => e.id)).toEqual(['https://10.0.0.6:8443']);
    await cluster.close();
  });
});
