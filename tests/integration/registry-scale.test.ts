/**
 * 1,000 instances registering and renewing at once, through two gateway replicas sharing Redis:
 * every request answered, every instance at both replicas, every renewal counted, none lost.
 */
import { Pool } from 'undici';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { ConfigInput } from '../../src/config/schema.ts';
import { eventually } from '../conformance/registry-store.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { newPrefix } from '../helpers/registry.ts';
import { metricValue, scrape } from '../helpers/tls-client.ts';

const N = 1000;
const TOKEN = 'scale-test-token-0123456789abcdef';
const TOKEN_ENV = 'PEREGRINE_TEST_SCALE_TOKEN';

let redis: TestRedis;
let a: TestGateway;
let b: TestGateway;
const pools: Pool[] = [];

function replicaConfig(name: string, prefix: string): Partial<ConfigInput> {
  return {
    telemetry: { logLevel: 'warn' },
    redis: { url: redis.url, keyPrefix: prefix, commandTimeout: '2s' },
    registry: {
      store: 'redis',
      gatewayId: name,
      listener: { address: '127.0.0.1:0' },
      credentials: { tokens: [{ name: 'fleet', env: TOKEN_ENV, services: ['fleet'] }] },
      limits: { maxInstancesPerService: 2 * N },
      rateLimit: { perSecond: 100_000, burst: 100_000 },
    },
  };
}

beforeAll(async () => {
  process.env[TOKEN_ENV] = TOKEN;
  redis = await startRedis();
  const prefix = newPrefix();
  a = await startGateway(replicaConfig('gw-a', prefix));
  b = await startGateway(replicaConfig('gw-b', prefix));
  await Promise.all([a.gateway.registry!.store.synced(), b.gateway.registry!.store.synced()]);
}, 30_000);

afterAll(async () => {
  for (const p of pools) await p.close();
  await a?.close();
  await b?.close();
  await redis?.close();
  delete process.env[TOKEN_ENV];
});

function pool(g: TestGateway): Pool {
  const p = new Pool(`http://127.0.0.1:${g.gateway.registryAddress.port}`, { connections: 32 });
  pools.push(p);
  return p;
}

async function send(p: Pool, method: 'PUT' | 'POST', path: string, body?: unknown): Promise<number> {
  const res = await p.request({
    method,
    path,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  await res.body.dump();
  return res.statusCode;
}

const addressOf = (i: number) => `10.${(i >> 8) & 255}.${i & 255}.1`;

async function total(g: TestGateway, name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricValue(await scrape(g.adminUrl), name, labels) ?? 0;
}

it(`${N} instances register and renew at once through two replicas; none is lost`, async () => {
  const [pa, pb] = [pool(a), pool(b)];
  const via = (i: number) => (i % 2 === 0 ? pa : pb);

  const registered = await Promise.all(
    Array.from({ length: N }, (_, i) =>
      send(via(i), 'PUT', `/v1/services/fleet/instances/i-${i}`, {
        address: addressOf(i),
        port: 8080,
        ttl: '60s',
      }),
    ),
  );
  expect(registered.filter((s) => s !== 201)).toEqual([]);
  for (const g of [a, b])
    await eventually(() => expect(g.gateway.registry!.store.list('fleet').length).toBe(N), 5000);

  const before = new Map(a.gateway.registry!.store.list('fleet').map((i) => [i.id, i.lastHeartbeat]));
  for (let round = 0; round < 2; round++) {
    // Each instance renews through the other replica this time.
    const renewed = await Promise.all(
      Array.from({ length: N }, (_, i) =>
        send(via(i + 1 + round), 'POST', `/v1/services/fleet/instances/i-${i}/heartbeat`),
      ),
    );
    expect(renewed.filter((s) => s !== 200)).toEqual([]);
  }

  for (const g of [a, b]) {
    await eventually(() => {
      const list = g.gateway.registry!.store.list('fleet');
      expect(list.length).toBe(N);
      expect(list.filter((i) => i.lastHeartbeat <= before.get(i.id)!)).toEqual([]);
      expect(new Set(list.map((i) => i.address)).size).toBe(N);
    }, 5000);
  }
  const created =
    (await total(a, 'peregrine_registry_registrations_total', { outcome: 'created' })) +
    (await total(b, 'peregrine_registry_registrations_total', { outcome: 'created' }));
  const renewals =
    (await total(a, 'peregrine_registry_renewals_total')) +
    (await total(b, 'peregrine_registry_renewals_total'));
  expect(created).toBe(N);
  expect(renewals).toBe(2 * N);
  expect(await total(a, 'peregrine_registry_store_errors_total')).toBe(0);
  expect(await total(b, 'peregrine_registry_store_errors_total')).toBe(0);
  // B followed A's changes without missing one (no gap re-reads).
  expect(await total(b, 'peregrine_registry_resyncs_total', { reason: 'gap' })).toBe(0);
  expect(await total(b, 'peregrine_registry_instances', { service: 'fleet' })).toBe(N);
}, 60_000);
