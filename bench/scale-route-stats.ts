/**
 * `node bench/scale-route-stats.ts`: what `GET /v1/stats/routes` costs the event loop at scale, in
 * one process, without load. A ConfigStore on the configuration of bench:scale
 * (bench/lib/scale-config.ts), two request series recorded per route (GET 200, and a 404 or 503 by
 * GET or POST), then, BENCH_SCALE_STATS_RUNS (7) times: the answer built in one piece (the walk,
 * its redaction and its JSON, as before the answer was sliced) and in steps (src/admin/route-stats.ts).
 *
 * Reported: the one piece's wall time (the least of the runs: interference only adds), the steps'
 * total, their count, and the longest steps (per step the least of the runs, so a preemption or a
 * GC in one run does not count as the step's cost). The admin API runs the steps in slices of
 * 2 ms, so the longest turn it holds is about 2 ms plus the longest step.
 *
 * Environment: BENCH_SCALE_STATS_ROUTES (10000), BENCH_SCALE_STATS_RUNS (7).
 */
import { routeStatsJson, routeStatsSteps } from '../src/admin/route-stats.ts';
import { redact } from '../src/config/redact.ts';
import { runNow } from '../src/slices.ts';
import { intFromEnv } from './lib/env.ts';
import { runMain } from './lib/proc.ts';
import { openScaleStore } from './lib/scale-store.ts';

const ROUTES = intFromEnv('BENCH_SCALE_STATS_ROUTES', 10000);
const RUNS = intFromEnv('BENCH_SCALE_STATS_RUNS', 7);

/** Run a generator step by step: each step's wall time in ms, and its result. */
function timeSteps<T>(steps: Generator<unknown, T, void>): { ms: number[]; value: T } {
  const ms: number[] = [];
  for (;;) {
    const start = performance.now();
    const step = steps.next();
    ms.push(performance.now() - start);
    if (step.done) return { ms, value: step.value };
  }
}

const leastPerStep = (a: number[] | undefined, b: number[]): number[] =>
  a === undefined ? b : a.map((x, i) => Math.min(x, b[i] ?? x));

async function main(): Promise<void> {
  const { store, metrics, close } = await openScaleStore(ROUTES, true);
  const out = (s: string) => process.stdout.write(`${s}\n`);
  try {
    let k = 0;
    for (const route of store.current.routes.routes) {
      metrics.recordRequest('scale', route.name, 'GET', 200, 0.003, undefined);
      metrics.recordRequest('scale', route.name, k % 3 ? 'POST' : 'GET', k % 7 ? 503 : 404, 0.02, undefined);
      k++;
    }
    let onePiece = Number.POSITIVE_INFINITY;
    let walk: number[] | undefined;
    let json: number[] | undefined;
    let chars = 0;
    for (let r = 0; r < RUNS; r++) {
      const start = performance.now();
      chars = JSON.stringify(redact(runNow(routeStatsSteps(metrics)))).length;
      onePiece = Math.min(onePiece, performance.now() - start);
      const w = timeSteps(routeStatsSteps(metrics));
      const j = timeSteps(routeStatsJson(w.value));
      walk = leastPerStep(walk, w.ms);
      json = leastPerStep(json, j.ms);
    }
    const sum = (a: number[]) => a.reduce((s, x) => s + x, 0);
    const top = (a: number[]) =>
      [...a]
        .sort((x, y) => y - x)
        .slice(0, 3)
        .map((x) => x.toFixed(2))
        .join(', ');
    out(`${ROUTES} routes, ${(chars / 1e6).toFixed(2)} MB of JSON; least of ${RUNS} runs, wall ms`);
    out(`one piece: ${onePiece.toFixed(1)} ms`);
    out(`walk: ${walk!.length} steps, ${sum(walk!).toFixed(1)} ms, longest ${top(walk!)}`);
    out(`json: ${json!.length} steps, ${sum(json!).toFixed(1)} ms, longest ${top(json!)}`);
  } finally {
    await close();
  }
}

if (import.meta.main) runMain('bench:scale-route-stats', main);
