/**
 * Accuracy across replicas: two gateways share a Redis policy of BENCH_ACC_POINTS per
 * BENCH_ACC_WINDOW seconds; each trial is a fresh key (its own window, opened by its first
 * request), sent five times the limit, split evenly between the two replicas, paced over 80% of
 * the window so every request of a trial falls in the one window. Goal (issue 15): admitted ≤ limit
 * × (1 + tolerance) in every trial, with the tolerance docs/rate-limiting.md states for a window:
 * zero, since each count is one atomic Lua call on one Redis.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { intFromEnv } from './env.ts';
import { type Group, log } from './feature-bench.ts';
import { goal, info } from './goals.ts';
import { type PacedResult, pacedFailures, runPaced } from './paced.ts';
import { pinTarget } from './pin.ts';
import { metricSum, scrapeMetrics } from './prom.ts';
import { ACCURACY_POLICY, accuracyConfigYaml, TRIAL_HEADER } from './ratelimit-config.ts';
import { startBenchRedis } from './redis.ts';
import type { BenchSession } from './session.ts';
import { fmtInt, markdownTable } from './table.ts';
import { startPeregrine } from './targets.ts';

/** Within one window: docs/rate-limiting.md, "Accuracy across replicas". */
export const ACCURACY_TOLERANCE = 0;
const REPLICAS = 2;
const OVERLOAD = 5;
/** The share of the window a trial's requests are spread over. */
const SPREAD = 0.8;

export interface Trial {
  sent: number;
  admitted: number;
  limited: number;
  /** Neither 200 nor 429, or no answer. */
  failed: number;
}

/** A trial's counts from what the two replicas answered. */
export function trialOf(results: readonly Pick<PacedResult, 'sent' | 'statuses' | 'errors'>[]): Trial {
  let sent = 0;
  let admitted = 0;
  let limited = 0;
  let failed = 0;
  for (const r of results) {
    sent += r.sent;
    admitted += r.statuses['200'] ?? 0;
    limited += r.statuses['429'] ?? 0;
    failed += pacedFailures(r) - (r.statuses['429'] ?? 0);
  }
  return { sent, admitted, limited, failed };
}

export interface AccuracyResult {
  points: number;
  windowS: number;
  trials: Trial[];
  maxAdmitted: number;
  minAdmitted: number;
  /** Decisions the replicas made without Redis during the trials (insurance, fail-open). */
  degraded: number;
}

/** Decisions the replicas made so far without Redis (insurance, fail-open or fail-closed). */
async function degradedDecisions(replicas: readonly { admin: string }[]): Promise<number> {
  let n = 0;
  for (const gw of replicas) {
    const m = await scrapeMetrics(gw.admin);
    for (const outcome of ['insured', 'store_error'])
      n += metricSum(m, 'peregrine_ratelimit_decisions_total', { policy: ACCURACY_POLICY, outcome });
  }
  return n;
}

async function measure(s: BenchSession): Promise<AccuracyResult> {
  const { ctx } = s;
  const points = intFromEnv('BENCH_ACC_POINTS', 100);
  const windowS = intFromEnv('BENCH_ACC_WINDOW', 2);
  const trials = intFromEnv('BENCH_ACC_TRIALS', 10);
  const redis = await startBenchRedis('redis-accuracy');
  const replicas = [];
  try {
    for (let k = 0; k < REPLICAS; k++) {
      const gw = await startPeregrine({
        name: `peregrine-accuracy-${k}`,
        dir: ctx.peregrineDir,
        configFile: join(ctx.tmpDir, `accuracy-${k}.yaml`),
        yaml: (listenPort, adminPort) =>
          accuracyConfigYaml({
            listenPort,
            adminPort,
            upstreamOrigin: ctx.upstream.origin,
            redisUrl: redis.url,
            points,
            windowS,
            replicas: REPLICAS,
          }),
        stdout: 'pipe',
      });
      if (ctx.pin) pinTarget(ctx.pin, gw.proc.pid);
      replicas.push(gw);
    }
    const durationS = windowS * SPREAD;
    const rate = (OVERLOAD * points) / REPLICAS / durationS;
    // A trial not counted: the first calls load the Lua script and warm the code up.
    const warmup = { [TRIAL_HEADER]: `warmup-${randomUUID()}` };
    await Promise.all(
      replicas.map((gw) => runPaced(gw.url, { rate, durationS, connections: 16, headers: warmup })),
    );
    const degradedBefore = await degradedDecisions(replicas);
    const out: Trial[] = [];
    for (let t = 0; t < trials; t++) {
      const headers = { [TRIAL_HEADER]: `trial-${t}-${randomUUID()}` };
      const results = await Promise.all(
        replicas.map((gw) => runPaced(gw.url, { rate, durationS, connections: 16, headers })),
      );
      const trial = trialOf(results);
      out.push(trial);
      log(
        `[accuracy] trial ${t + 1}: sent ${trial.sent}, admitted ${trial.admitted}, limited ${trial.limited}`,
      );
    }
    const degraded = (await degradedDecisions(replicas)) - degradedBefore;
    const admitted = out.map((x) => x.admitted);
    return {
      points,
      windowS,
      trials: out,
      maxAdmitted: Math.max(...admitted),
      minAdmitted: Math.min(...admitted),
      degraded,
    };
  } finally {
    await Promise.all(replicas.map((gw) => gw.proc.stop(5000)));
    await redis.proc.stop(2000);
  }
}

export const accuracyGroup: Group = {
  id: 'accuracy',
  title: `Accuracy: ${REPLICAS} replicas sharing a Redis policy, sent ${OVERLOAD}× the limit`,
  async run(s) {
    const r = await measure(s);
    const sum = (f: (t: Trial) => number) => r.trials.reduce((a, t) => a + f(t), 0);
    const table = markdownTable(
      [
        'limit',
        'trials',
        'sent',
        'admitted per trial: min / max',
        'limited',
        'failed',
        'decided without Redis',
      ],
      [
        [
          `${fmtInt(r.points)} per ${r.windowS} s`,
          fmtInt(r.trials.length),
          fmtInt(sum((t) => t.sent)),
          `${fmtInt(r.minAdmitted)} / ${fmtInt(r.maxAdmitted)}`,
          fmtInt(sum((t) => t.limited)),
          fmtInt(sum((t) => t.failed)),
          fmtInt(r.degraded),
        ],
      ],
      ['left', 'right', 'right', 'right', 'right', 'right', 'right'],
    );
    const checks = [
      goal(
        `accuracy: most admitted in one window by ${REPLICAS} replicas at ${OVERLOAD}× (limit ${r.points}, tolerance ${ACCURACY_TOLERANCE})`,
        r.maxAdmitted,
        '≤',
        r.points * (1 + ACCURACY_TOLERANCE),
        'count',
      ),
      info(
        'accuracy: fewest admitted in one window (below the limit: a refusal with budget left)',
        r.minAdmitted,
        'count',
      ),
    ];
    const notes = [
      `Accuracy: each trial a fresh key (header ${TRIAL_HEADER}), ${OVERLOAD}× the limit spread over ${SPREAD * 100}% of the window, half to each replica, open-loop. Failed: neither 200 nor 429.`,
    ];
    if (r.degraded > 0)
      notes.push(
        `Accuracy: ${r.degraded} decisions were made without Redis (insurance or fail-open: Redis slower than the policy's 50 ms timeout), where the bound is the insurance's, not Redis's.`,
      );
    return { body: table, checks, notes, data: r };
  },
};
