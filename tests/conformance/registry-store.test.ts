/** The RegistryStore conformance suite on each store: memory (fake clock) and Redis (real redis-server). */
import { afterAll, beforeAll } from 'vitest';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { elapseReal, memoryStore, newPrefix, redisReplica } from '../helpers/registry.ts';
import { registryStoreConformance } from './registry-store.ts';

registryStoreConformance('memory', {
  ttlMs: 15_000,
  async create(limits) {
    return memoryStore(limits);
  },
});

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.close();
});

registryStoreConformance('redis', {
  // Real time on Redis's clock: short leases, waits with room for a loaded machine.
  ttlMs: 1500,
  async create(limits) {
    const replica = redisReplica(redis.url, newPrefix(), limits);
    return { store: replica.store, elapse: elapseReal, close: () => replica.close() };
  },
});
