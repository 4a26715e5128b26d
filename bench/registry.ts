/**
 * `npm run bench:registry`: the service registry's goals (issue 14), each marked PASS or MISS.
 *
 * - throughput: `peregrine-registry` (the upstream's endpoint registered through the registration
 *   API) against `peregrine-passthrough` (the same endpoint in the config), as bench/run.ts
 *   measures them; goal ≥ 0.98× req/s.
 * - heartbeats: 1,000 instances renewing every 5 s, no data-plane traffic; the gateway's CPU ≤ 5%
 *   of one core, with the memory store and with Redis. Both gateways and the floor (bare node:http)
 *   run at once, each with a fleet of its own, their CPU read over the same turns: the median of
 *   the turns is the goal's figure, beside the floor's and the per-turn differences, and each
 *   server's user and system time and wakeups per renewal (loopback charges the fleet's receive to
 *   the writer's system time).
 * - propagation: two replicas on one Redis; register, drain, deregister through A, seen on B's
 *   watch stream; p50/p99/max, goal p99 ≤ 1 s; and expiry.
 * - churn: one endpoint registered or deregistered every 100 ms under wrk's load; goal: no failed
 *   request.
 *
 * About 5 minutes on a quiet machine. Environment: BENCH_GROUPS (throughput,heartbeats,propagation,
 * churn), BENCH_REGISTRY_STORES (memory,redis: heartbeats and churn), BENCH_HB_INSTANCES (1000),
 * BENCH_HB_SERVICES (10), BENCH_HB_TURNS (12), BENCH_HB_TURN (10 s), BENCH_HB_IDLE (5 s), BENCH_HB_KEEPALIVE (Peregrine's default),
 * BENCH_PROP_CYCLES (200: 600 changes), BENCH_PROP_EXPIRIES (50), BENCH_CHURN_DURATION (15 s),
 * BENCH_CHURN_INTERVAL_MS (100); and bench/run.ts's BENCH_DURATION, BENCH_WARMUP,
 * BENCH_CONNECTIONS, BENCH_ROUNDS, BENCH_PIN, BENCH_QUIET_WAIT, BENCH_RETRIES, BENCH_PEREGRINE_DIR,
 * BENCH_KEEP_TMP. Needs wrk (else autocannon) and redis-server.
 */
import { runFeatureBench, throughputGroup } from './lib/feature-bench.ts';
import { runMain } from './lib/proc.ts';
import { churnGroup } from './lib/registry-churn.ts';
import { heartbeatsGroup, type RegistryStoreKind } from './lib/registry-heartbeats.ts';
import { propagationGroup } from './lib/registry-propagation.ts';

/** BENCH_REGISTRY_STORES: the stores heartbeats and churn run with. */
export function registryStores(raw = process.env.BENCH_REGISTRY_STORES): RegistryStoreKind[] {
  const stores = (raw || 'memory,redis').split(',').map((s) => s.trim());
  for (const s of stores)
    if (s !== 'memory' && s !== 'redis')
      throw new Error(`BENCH_REGISTRY_STORES: ${JSON.stringify(s)} is not memory or redis`);
  return stores as RegistryStoreKind[];
}

async function main(): Promise<void> {
  const stores = registryStores();
  await runFeatureBench({
    name: 'registry',
    title: 'Peregrine registry benchmark',
    groups: [
      throughputGroup(
        'throughput',
        'Static vs registry-discovered endpoints',
        ['peregrine-passthrough', 'peregrine-registry'],
        (c) => c.name.includes('registry'),
      ),
      heartbeatsGroup(stores),
      propagationGroup,
      churnGroup(stores),
    ],
  });
}

if (import.meta.main) runMain('bench:registry', main);
