/**
 * Mode sidecar in the config: what it derives (listeners, upstreams, routes, policy sections laid
 * over each other), what each mode refuses, where problems are reported, and routes scoped to
 * listeners (which the derived config relies on).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { type ConfigError, parseConfigText } from '../../../src/config/loader.ts';
import { type ConfigInput, ConfigSchema, dynamicPart } from '../../../src/config/schema.ts';
import { compileSnapshot, routeTableFor } from '../../../src/control/snapshot.ts';
import { serviceOfIdentity } from '../../../src/tls/spiffe.ts';
import { silentLogger, testMetrics } from '../../helpers/registry.ts';

const SIDECAR = {
  service: 'orders',
  identity: { trustDomain: 'prod.example', cert: 'tls.crt', key: 'tls.key', ca: 'ca.crt' },
  inbound: { app: 'http://127.0.0.1:8080' },
  outbound: { services: ['payments'] },
  registry: { url: 'https://registry.internal:9902' },
};

function sidecar(overrides: Record<string, unknown> = {}, top: Partial<ConfigInput> = {}) {
  return ConfigSchema.safeParse({ mode: 'sidecar', ...top, sidecar: { ...SIDECAR, ...overrides } });
}

function issues(result: ReturnType<typeof sidecar>): string[] {
  return result.success ? [] : result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
}

describe('mode sidecar derives what the pipeline runs', () => {
  it('an mTLS inbound listener to the application and a loopback outbound listener by Host', () => {
    const r = sidecar();
    expect(issues(r)).toEqual([]);
    const c = r.data!;
    expect(c.listeners.map((l) => [l.name, l.address, l.tls?.clientAuth])).toEqual([
      ['inbound', '0.0.0.0:15006', 'required'],
      ['outbound', '127.0.0.1:15001', undefined],
    ]);
    expect(c.listeners[0]!.tls).toMatchObject({ cert: 'tls.crt', key: 'tls.key', clientCa: 'ca.crt' });
    expect(c.routes.map((x) => [x.name, x.listeners, x.match.host, x.upstream, x.identity?.allow])).toEqual([
      ['inbound', ['inbound'], undefined, 'inbound', ['spiffe://prod.example/*']],
      ['outbound.payments', ['outbound'], 'payments', 'outbound.payments', undefined],
      ['outbound.payments.mesh', ['outbound'], 'payments.mesh', 'outbound.payments', undefined],
    ]);
    expect(c.upstreams.inbound).toMatchObject({
      endpoints: ['http://127.0.0.1:8080'],
      retries: { maxAttempts: 1 },
      circuitBreaker: { enabled: false },
      outlierDetection: { enabled: false },
    });
    expect(c.upstreams['outbound.payments']).toMatchObject({
      discovery: { registry: 'payments' },
      tls: {
        ca: 'ca.crt',
        cert: 'tls.crt',
        key: 'tls.key',
        identity: { expectPattern: 'spiffe://prod.example/ns/*/sa/{service}' },
      },
      // The ordinary defaults.
      retries: { maxAttempts: 2 },
      circuitBreaker: { enabled: true },
    });
    expect(c.telemetry.serviceName).toBe('orders-sidecar');
  });

  it("keeps mesh peers' idle connections a minute on the inbound listener, or as long as it says", () => {
    const [byDefault, written] = [
      sidecar(),
      sidecar({ inbound: { ...SIDECAR.inbound, keepAliveTimeout: '5m' } }),
    ];
    expect(byDefault.data!.listeners.map((l) => [l.name, l.limits.keepAliveTimeout])).toEqual([
      ['inbound', 60_000],
      // The outbound listener's clients are the local application's: the ordinary default.
      ['outbound', 5_000],
    ]);
    expect(written.data!.listeners[0]!.limits.keepAliveTimeout).toBe(300_000);
  });

  it('lays the written policy sections over each other, whole: outbound.upstream, then the service', () => {
    const r = sidecar({
      outbound: {
        domain: false,
        services: { payments: { timeouts: { response: '5s' }, filter: { zone: 'a' } }, stock: {} },
        upstream: { retries: { maxAttempts: 3 }, timeouts: { connect: '1s' }, protocol: 'h2' },
      },
      inbound: { app: 'http://localhost:8080', upstream: { timeouts: { response: '60s' } } },
    });
    expect(issues(r)).toEqual([]);
    const up = r.data!.upstreams;
    // A section written replaces the one below it whole: the service's timeouts, with their defaults.
    expect(up['outbound.payments']).toMatchObject({
      timeouts: { connect: 2000, response: 5000 },
      retries: { maxAttempts: 3 },
      protocol: 'h2',
      discovery: { registry: 'payments', filter: { zone: 'a' } },
    });
    expect(up['outbound.stock']).toMatchObject({ timeouts: { connect: 1000, response: 15_000 } });
    expect(up.inbound).toMatchObject({ timeouts: { response: 60_000 }, retries: { maxAttempts: 1 } });
    expect(r.data!.routes.map((x) => x.name)).toEqual(['inbound', 'outbound.payments', 'outbound.stock']);
  });

  it('inbound routes with allow-lists of their own, beside the catch-all of inbound.allow', () => {
    const r = sidecar({
      inbound: {
        app: 'http://127.0.0.1:8080',
        allow: ['spiffe://prod.example/ns/shop/sa/web'],
        routes: [
          {
            name: 'admin',
            match: { path: '/admin', methods: ['POST'] },
            allow: ['spiffe://prod.example/ns/ops/*'],
          },
        ],
      },
    });
    expect(issues(r)).toEqual([]);
    expect(
      r.data!.routes.slice(0, 2).map((x) => [x.name, x.match.path, x.match.methods, x.identity?.allow]),
    ).toEqual([
      ['inbound', '/', undefined, ['spiffe://prod.example/ns/shop/sa/web']],
      ['inbound.admin', '/admin', ['POST'], ['spiffe://prod.example/ns/ops/*']],
    ]);
  });

  it('an outbound-only sidecar has one listener and nothing to register', () => {
    const r = sidecar({ inbound: undefined });
    expect(issues(r)).toEqual([]);
    expect(r.data!.listeners.map((l) => l.name)).toEqual(['outbound']);
    expect(Object.keys(r.data!.upstreams)).toEqual(['outbound.payments']);
  });

  it('keeps an explicit telemetry.serviceName', () => {
    expect(sidecar({}, { telemetry: { serviceName: 'orders-proxy' } }).data!.telemetry.serviceName).toBe(
      'orders-proxy',
    );
  });
});

describe('each mode refuses what makes no sense in it', () => {
  it('a sidecar writes no listeners, routes, upstreams or registry of its own', () => {
    const r = sidecar(
      {},
      {
        listeners: [{ name: 'edge', address: '0.0.0.0:8080' }],
        upstreams: { x: { endpoints: ['http://10.0.0.1'] } },
        routes: [{ name: 'r', upstream: 'x' }],
        registry: { store: 'memory' },
      },
    );
    expect(issues(r)).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^listeners: not in mode sidecar/),
        expect.stringMatching(/^upstreams: not in mode sidecar/),
        expect.stringMatching(/^routes: not in mode sidecar/),
        expect.stringMatching(/^registry: not in mode sidecar/),
      ]),
    );
  });

  it('mode sidecar needs its section; a gateway refuses one, and needs listeners', () => {
    expect(issues(ConfigSchema.safeParse({ mode: 'sidecar' }))).toContain(
      'sidecar: mode sidecar needs the sidecar section',
    );
    expect(
      issues(
        ConfigSchema.safeParse({ listeners: [{ name: 'e', address: '127.0.0.1:1' }], sidecar: SIDECAR }),
      ),
    ).toContain('sidecar: the sidecar section needs mode: sidecar');
    expect(issues(ConfigSchema.safeParse({ listeners: [] }))).toContain(
      'listeners: at least one listener is required',
    );
  });

  it('refuses an outbound listener off loopback, an application off loopback, a pattern outside the trust domain', () => {
    const r = sidecar({
      identity: { ...SIDECAR.identity, pattern: 'spiffe://other.example/ns/*/sa/{service}' },
      inbound: { app: 'http://10.0.0.5:8080' },
      outbound: { address: '0.0.0.0:15001', services: ['payments', 'payments'] },
      registry: { url: 'http://registry.internal:9902' },
    });
    const found = issues(r);
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(
          /^sidecar\.identity\.pattern: the pattern must be in the trust domain prod\.example/,
        ),
        expect.stringMatching(/^sidecar\.inbound\.app: the local application is reached on loopback/),
        expect.stringMatching(
          /^sidecar\.outbound\.address: the outbound listener takes requests without authentication/,
        ),
        'sidecar.outbound.services.1: duplicate service payments',
        expect.stringMatching(
          /^sidecar\.registry\.url: a plain http:\/\/ registry cannot see the sidecar certificate/,
        ),
      ]),
    );
  });

  it('reports problems in the file at their line, under sidecar', () => {
    const text = [
      'mode: sidecar',
      'sidecar:',
      '  service: orders',
      '  identity: { trustDomain: prod.example, cert: a, key: b, ca: c }',
      '  outbound:',
      '    services: [Payments]',
      '  registry: { url: "https://r:1" }',
      '',
    ].join('\n');
    try {
      parseConfigText(text, 'sidecar.yaml', {});
      expect.unreachable();
    } catch (err) {
      expect((err as ConfigError).issues).toMatchObject([{ line: 6, path: 'sidecar.outbound.services.0' }]);
    }
  });
});

describe('routes served on named listeners', () => {
  const config = ConfigSchema.parse({
    listeners: [
      { name: 'public', address: '127.0.0.1:1' },
      { name: 'internal', address: '127.0.0.1:2' },
      { name: 'other', address: '127.0.0.1:3' },
    ],
    upstreams: { u: { endpoints: ['http://127.0.0.1:9'] } },
    routes: [
      { name: 'everywhere', match: { path: '/' }, upstream: 'u' },
      { name: 'internal-only', match: { path: '/admin' }, upstream: 'u', listeners: ['internal'] },
    ],
  });
  const { snapshot } = compileSnapshot(dynamicPart(config), 1, undefined, {
    metrics: testMetrics(),
    logger: silentLogger,
  });
  const match = (listener: string, path: string) =>
    routeTableFor(snapshot, listener).match('x', path, 'GET', {})?.route.name;

  it('match only there; other listeners see the unscoped routes', () => {
    expect(match('internal', '/admin')).toBe('internal-only');
    expect(match('public', '/admin')).toBe('everywhere');
    expect(match('other', '/admin')).toBe('everywhere');
    // Every route is still listed once (admin API, metrics).
    expect(snapshot.routes.routes.map((r) => r.name).sort()).toEqual(['everywhere', 'internal-only']);
  });

  it('without scoped routes every listener reads the one table', () => {
    const plain = compileSnapshot(
      dynamicPart(ConfigSchema.parse({ ...config, routes: [{ name: 'a', upstream: 'u' }], mode: 'gateway' })),
      1,
      undefined,
      { metrics: testMetrics(), logger: silentLogger },
    ).snapshot;
    expect(plain.listenerRoutes).toBeNull();
    expect(routeTableFor(plain, 'public')).toBe(plain.routes);
  });

  it('names only listeners that exist', () => {
    const r = ConfigSchema.safeParse({
      listeners: [{ name: 'public', address: '127.0.0.1:1' }],
      upstreams: { u: { endpoints: ['http://127.0.0.1:9'] } },
      routes: [{ name: 'a', upstream: 'u', listeners: ['nope'] }],
    });
    expect(r.error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`)).toEqual([
      'routes.0.listeners.0: unknown listener "nope"',
    ]);
  });
});

describe('serviceOfIdentity', () => {
  const pattern = 'spiffe://prod.example/ns/*/sa/{service}';
  it('reads the service from its place in the pattern', () => {
    expect(serviceOfIdentity(pattern, 'spiffe://prod.example/ns/shop/sa/orders')).toBe('orders');
    expect(serviceOfIdentity(pattern, 'spiffe://prod.example/ns/shop/sa/orders/x')).toBeUndefined();
    expect(serviceOfIdentity(pattern, 'spiffe://other.example/ns/shop/sa/orders')).toBeUndefined();
    expect(serviceOfIdentity(pattern, 'spiffe://prod.example/nx/shop/sa/orders')).toBeUndefined();
    expect(serviceOfIdentity('spiffe://prod.example/{service}', 'spiffe://prod.example/web')).toBe('web');
  });
});

describe('config/examples/sidecar.yaml', () => {
  it('is a valid sidecar config deriving what docs/configuration.md says', async () => {
    const file = fileURLToPath(new URL('../../../config/examples/sidecar.yaml', import.meta.url));
    const c = parseConfigText(readFileSync(file, 'utf8'), file, { POD_IP: '10.1.4.17' });
    expect(c.mode).toBe('sidecar');
    expect(c.telemetry.serviceName).toBe('orders-sidecar');
    expect(c.routes.map((r) => r.name)).toEqual([
      'inbound',
      'inbound.refunds',
      'outbound.payments',
      'outbound.payments.mesh',
      'outbound.inventory',
      'outbound.inventory.mesh',
    ]);
    expect(c.sidecar?.registry.address).toBe('10.1.4.17');
  });
});
