/**
 * Registry stores for tests: a memory store on a fake clock, and Redis stores (each with a key
 * prefix of its own, so stores sharing a prefix act as replicas of one registry).
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { MemoryRegistryStore } from '../../src/registry/memory-store.ts';
import { RedisRegistryStore } from '../../src/registry/redis-store.ts';
import type { StoreLimits } from '../../src/registry/store.ts';
import { RedisConnection } from '../../src/stores/redis.ts';
import { RedisSchema } from '../../src/stores/schema.ts';
import { createMetrics, type GatewayMetrics } from '../../src/telemetry/metrics.ts';
import { metricValue } from './tls-client.ts';

export const TEST_LIMITS: StoreLimits = { maxServices: 100, maxInstancesPerService: 2000 };
export const SWEEP_MS = 50;

export const silentLogger = pino({ level: 'silent' });

export function testMetrics(): GatewayMetrics {
  return createMetrics({ exemplars: false, version: 'test' });
}

export interface FakeClockStore {
  readonly store: MemoryRegistryStore;
  readonly metrics: GatewayMetrics;
  /** Move the store's clock and sweep. */
  elapse(ms: number): Promise<void>;
  close(): Promise<void>;
}

export function memoryStore(limits: Partial<StoreLimits> = {}): FakeClockStore {
  let now = 1_750_000_000_000;
  const metrics = testMetrics();
  const store = new MemoryRegistryStore({
    limits: { ...TEST_LIMITS, ...limits },
    sweepInterval: 60_000,
    metrics: metrics.registryMetrics,
    logger: silentLogger,
    now: () => now,
  });
  return {
    store,
    metrics,
    async elapse(ms) {
      now += ms;
      store.sweep();
    },
    close: () => store.close(),
  };
}

export interface RedisReplica {
  readonly store: RedisRegistryStore;
  readonly redis: RedisConnection;
  readonly metrics: GatewayMetrics;
  close(): Promise<void>;
}

/** A fresh key prefix: a registry of its own on a shared redis-server. */
export function newPrefix(): string {
  return `test-${randomUUID().slice(0, 8)}:`;
}

export function redisConnection(url: string, prefix: string, metrics: GatewayMetrics): RedisConnection {
  const config = RedisSchema.parse({
    url,
    keyPrefix: prefix,
    commandTimeout: '1s',
    reconnect: { initialDelay: '20ms', maxDelay: '200ms' },
  });
  return new RedisConnection(config, { logger: silentLogger, metrics: metrics.redis });
}

/** One replica: its own connections and store, on the registry named by `prefix`. */
export function redisReplica(
  url: string,
  prefix: string,
  limits: Partial<StoreLimits> = {},
  resyncInterval = 30_000,
): RedisReplica {
  const metrics = testMetrics();
  const redis = redisConnection(url, prefix, metrics);
  const store = new RedisRegistryStore(redis, {
    limits: { ...TEST_LIMITS, ...limits },
    sweepInterval: SWEEP_MS,
    resyncInterval,
    metrics: metrics.registryMetrics,
    logger: silentLogger,
  });
  let closing: Promise<void> | undefined;
  return {
    store,
    redis,
    metrics,
    close() {
      closing ??= store.close().then(() => redis.close());
      return closing;
    },
  };
}

/** Real time for Redis leases: the time itself, then a sweep and the events it publishes. */
export async function elapseReal(ms: number): Promise<void> {
  await sleep(ms + 3 * SWEEP_MS);
}

/** The sum of a metric's samples with these labels in `metrics` (0 when none). */
export async function metricOf(
  metrics: GatewayMetrics,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  return metricValue(await metrics.registry.metrics(), name, labels) ?? 0;
}
