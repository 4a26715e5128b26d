/**
 * The shared Redis connection against a real redis-server: ready, commands fail at once while
 * Redis is down (no offline queue), reconnection with backoff, a per-command deadline, state and
 * errors as metrics, a pub/sub connection of its own, a rate limit connection of its own (no
 * per-command timer; cut when stalled), idempotent close.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { RedisConnection } from '../../src/stores/redis.ts';
import type { GatewayMetrics } from '../../src/telemetry/metrics.ts';
import { eventually } from '../conformance/registry-store.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { metricOf, newPrefix, redisConnection, testMetrics } from '../helpers/registry.ts';

let redis: TestRedis;
const open: RedisConnection[] = [];

function connect(metrics: GatewayMetrics = testMetrics(), prefix = newPrefix()): RedisConnection {
  const c = redisConnection(redis.url, prefix, metrics);
  open.push(c);
  return c;
}

const metric = metricOf;

/** peregrine_redis_connection_state{state="closed"} of a connection. */
function closed(metrics: GatewayMetrics, connection: string): Promise<number | undefined> {
  return metric(metrics, 'peregrine_redis_connection_state', { connection, state: 'closed' });
}

beforeAll(async () => {
  redis = await startRedis();
});
afterEach(async () => {
  for (const c of open.splice(0)) await c.close();
  if (!redis.running) await redis.start();
});
afterAll(async () => {
  await redis?.close();
});

describe('RedisConnection', () => {
  it('connects, leaves keys to its users to prefix, and reports its state', async () => {
    const metrics = testMetrics();
    const prefix = newPrefix();
    const c = connect(metrics, prefix);
    let readies = 0;
    c.onReady(() => readies++);
    await eventually(() => expect(c.ready).toBe(true));
    await c.client.set(`${c.ownKeyPrefix}k`, 'v');
    expect(c.ownKeyPrefix).toBe(prefix);
    expect(await redis.command('GET', `${prefix}k`)).toBe('$1\r\nv\r\n');
    expect(readies).toBe(1);
    expect(c.health()).toMatchObject({ connection: 'commands', state: 'ready', lastError: null });
    expect(
      await metric(metrics, 'peregrine_redis_connection_state', { connection: 'commands', state: 'ready' }),
    ).toBe(1);
  });

  it('while Redis is down, commands fail at once; it reconnects when Redis is back', async () => {
    const metrics = testMetrics();
    const c = connect(metrics);
    let readies = 0;
    c.onReady(() => readies++);
    await eventually(() => expect(c.ready).toBe(true));
    await redis.stop();
    await eventually(() => expect(c.state).toBe('reconnecting'));
    const started = performance.now();
    const err = await c.client.get('k').catch((e: unknown) => e as Error);
    expect(err).toBeInstanceOf(Error);
    expect(performance.now() - started).toBeLessThan(50);
    expect(c.recordCommandError(err)).toBe('connection');
    expect(c.health().lastError).not.toBeNull();
    await sleep(300);
    expect(
      await metric(metrics, 'peregrine_redis_reconnects_total', { connection: 'commands' }),
    ).toBeGreaterThan(1);
    expect(
      await metric(metrics, 'peregrine_redis_errors_total', { connection: 'commands', kind: 'connection' }),
    ).toBeGreaterThan(0);
    expect(
      await metric(metrics, 'peregrine_redis_connection_state', { connection: 'commands', state: 'ready' }),
    ).toBe(0);
    await redis.start();
    await eventually(() => expect(c.ready).toBe(true), 3000);
    expect(readies).toBe(2);
    expect(await c.client.ping()).toBe('PONG');
  });

  it('a command without a reply in commandTimeout fails as a timeout', async () => {
    const metrics = testMetrics();
    const c = connect(metrics);
    await eventually(() => expect(c.ready).toBe(true));
    // Redis holds every reply for 3 s; the 1 s deadline ends the wait first.
    await redis.command('CLIENT', 'PAUSE', '3000', 'ALL');
    const started = performance.now();
    const err = await c.client.get('k').catch((e: unknown) => e);
    const took = performance.now() - started;
    expect(err).toBeInstanceOf(Error);
    expect(took).toBeGreaterThanOrEqual(900);
    expect(took).toBeLessThan(2500);
    expect(c.recordCommandError(err)).toBe('timeout');
    expect(
      await metric(metrics, 'peregrine_redis_errors_total', { connection: 'commands', kind: 'timeout' }),
    ).toBe(1);
    await sleep(2100);
  });

  it('has a pub/sub connection of its own, closed with it; close is idempotent', async () => {
    const metrics = testMetrics();
    const c = connect(metrics);
    const sub = c.subscriber();
    expect(c.subscriber()).toBe(sub);
    await eventually(() => expect(sub.ready && c.ready).toBe(true));
    const got: string[] = [];
    sub.client.on('message', (_channel: string, message: string) => got.push(message));
    await sub.client.subscribe('chan');
    await c.client.publish('chan', 'hello');
    await eventually(() => expect(got).toEqual(['hello']));
    await c.close();
    await c.close();
    expect(c.state).toBe('closed');
    expect(sub.state).toBe('closed');
    expect(await closed(metrics, 'subscriber')).toBe(1);
    expect(() => c.subscriber()).toThrow(/closed/);
  });

  it('has a rate limit connection of its own: no per-command timer, keys prefixed by the users of both, closed with it', async () => {
    const metrics = testMetrics();
    const prefix = newPrefix();
    const c = connect(metrics, prefix);
    const rl = c.rateLimits();
    // Neither client prefixes keys: their users do it themselves.
    expect([c.ownKeyPrefix, c.client.options.keyPrefix || '']).toEqual([prefix, '']);
    expect([rl.ownKeyPrefix, rl.client.options.keyPrefix || '']).toEqual([prefix, '']);
    expect(c.rateLimits()).toBe(rl);
    expect(() => rl.rateLimits()).toThrow(/no rate limit connection/);
    expect(() => rl.subscriber()).toThrow(/no subscriber/);
    await eventually(() => expect(rl.ready && c.ready).toBe(true));
    expect(c.client.options.commandTimeout).toBe(1000);
    expect(rl.client.options.commandTimeout).toBeUndefined();
    expect(c.rateLimitHealth().connection).toBe('ratelimits');
    const clients = String(await redis.command('CLIENT', 'LIST'));
    expect(clients).toMatch(/ name=peregrine-rl /);
    // Redis holds replies for 1.5 s: a command on the shared connection times out after its 1 s,
    // one on the rate limit connection waits for the reply (its callers bound their own wait).
    await redis.command('CLIENT', 'PAUSE', '1500', 'ALL');
    const shared = c.client.get('k').then(
      () => 'answered',
      () => 'failed',
    );
    const limited = rl.client.get('k').then(
      () => 'answered',
      () => 'failed',
    );
    expect(await Promise.all([shared, limited])).toEqual(['failed', 'answered']);
    await c.close();
    expect(rl.state).toBe('closed');
    expect(await closed(metrics, 'ratelimits')).toBe(1);
  });

  it('a stalled rate limit connection is cut after commandTimeout of silence, failing what it holds, and reconnects', async () => {
    const metrics = testMetrics();
    const c = connect(metrics);
    const rl = c.rateLimits();
    await eventually(() => expect(rl.ready).toBe(true));
    redis.pause();
    try {
      const pending = rl.client.get('k').then(
        () => 'answered',
        (e: unknown) => (e instanceof Error ? e.message : String(e)),
      );
      const t0 = performance.now();
      rl.answered(t0);
      // Silent for less than commandTimeout (1 s): left alone.
      rl.stalled(t0 + 999);
      expect(rl.state).toBe('ready');
      // Silent for commandTimeout: cut; the command it held fails at once, not when Redis wakes.
      rl.stalled(t0 + 1000);
      expect(await pending).toMatch(/max retries per request|Connection is closed/);
      expect(
        await metric(metrics, 'peregrine_redis_errors_total', { connection: 'ratelimits', kind: 'timeout' }),
      ).toBe(1);
      // A second stall within commandTimeout of the cut does not cut again.
      rl.stalled(t0 + 1500);
      expect(
        await metric(metrics, 'peregrine_redis_errors_total', { connection: 'ratelimits', kind: 'timeout' }),
      ).toBe(1);
    } finally {
      redis.resume();
    }
    await eventually(() => expect(rl.ready).toBe(true));
    expect(await rl.client.incr('k')).toBe(1);
    expect(
      await metric(metrics, 'peregrine_redis_reconnects_total', { connection: 'ratelimits' }),
    ).toBeGreaterThanOrEqual(1);
    // The shared connection was never touched.
    expect(await metric(metrics, 'peregrine_redis_reconnects_total', { connection: 'commands' })).toBe(0);
  });
});
