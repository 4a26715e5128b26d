/**
 * `npm run bench:ratelimit`: rate limiting's goals (issue 15), each marked PASS or MISS.
 *
 * - throughput: `peregrine-ratelimit` (a memory limiter that never limits) against
 *   `peregrine-passthrough`, and `peregrine-ratelimit-redis`, as bench/run.ts measures them; goal:
 *   memory ≥ 0.95× passthrough req/s; CPU per request Redis / memory.
 * - latency: the three at one fixed rate, open-loop, taking turns; the p50 and p99 the Redis
 *   limiter adds, as the median over turns of per-turn differences (timed from when each request
 *   was due), goal p99 added ≤ 1 ms; the pooled p99 of the earlier method beside it; CPU per
 *   request (bench/lib/ratelimit-latency.ts).
 * - accuracy: two replicas sharing a Redis policy at 5× its limit; goal admitted ≤ limit × (1 +
 *   tolerance), tolerance 0 within a window.
 *
 * About 7 minutes on a quiet machine. Environment: BENCH_GROUPS (throughput,latency,accuracy),
 * BENCH_RL_RATE (1000 req/s), BENCH_RL_DURATION (30 s: 30 turns of BENCH_RL_SLICE, 1 s), BENCH_RL_CONNECTIONS (16),
 * BENCH_RL_WARMUP_REQUESTS (30,000 per gateway before the turns, BENCH_RL_WARMUP_RATE 2,000 req/s),
 * BENCH_RL_REDIS_CPU (target: pinned, redis-server runs on the gateway's CPU; rest: with the bench),
 * BENCH_ACC_POINTS (100), BENCH_ACC_WINDOW (2 s), BENCH_ACC_TRIALS (10); and bench/run.ts's
 * BENCH_DURATION, BENCH_WARMUP, BENCH_CONNECTIONS, BENCH_ROUNDS, BENCH_PIN, BENCH_QUIET_WAIT,
 * BENCH_RETRIES, BENCH_PEREGRINE_DIR, BENCH_KEEP_TMP. Needs wrk (else autocannon) and redis-server.
 */
import { runFeatureBench, throughputGroup } from './lib/feature-bench.ts';
import { runMain } from './lib/proc.ts';
import { accuracyGroup } from './lib/ratelimit-accuracy.ts';
import { latencyGroup } from './lib/ratelimit-latency.ts';

async function main(): Promise<void> {
  await runFeatureBench({
    name: 'ratelimit',
    title: 'Peregrine rate-limit benchmark',
    groups: [
      throughputGroup(
        'throughput',
        'Throughput: rate limit (never reached) against passthrough',
        ['peregrine-passthrough', 'peregrine-ratelimit', 'peregrine-ratelimit-redis'],
        (c) => c.name.includes('rate limit'),
      ),
      latencyGroup,
      accuracyGroup,
    ],
  });
}

if (import.meta.main) runMain('bench:ratelimit', main);
