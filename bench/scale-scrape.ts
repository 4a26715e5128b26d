/**
 * `node bench/scale-scrape.ts`: where a scrape's time goes at scale, in one process, without load.
 * A ConfigStore on the configuration of bench:scale (bench/lib/scale-config.ts; its upstreams are
 * watched by the metrics as in a gateway), one request and one attempt recorded per route, then:
 *
 * - per family: the main thread's CPU time rendering it alone (its collect() included), its
 *   characters, and its longest piece (what runs between two chances to yield), the least of 5
 *   rounds after 3 to warm up;
 * - BENCH_SCALE_SCRAPE_RUNS (5) OpenMetrics scrapes written to a pipe to another process: the main
 *   thread's CPU, the turns of the event loop it took (a setImmediate chain counts them) and the
 *   longest of them in the thread's CPU time (what a request arriving meanwhile waits for on an
 *   otherwise idle core; wall time would count what other processes take on a shared machine).
 *
 * CPU times come from /proc/thread-self/schedstat (Linux only).
 *
 * Environment: BENCH_SCALE_SCRAPE_ROUTES (10000), BENCH_SCALE_SCRAPE_RUNS (5).
 */
import { Counter, type Registry } from 'prom-client';
import { rendersItself } from '../src/telemetry/metric-cells.ts';
import { intFromEnv } from './lib/env.ts';
import { runMain } from './lib/proc.ts';
import { scaleUpstreams } from './lib/scale-config.ts';
import { openScaleStore, withScrapePipe } from './lib/scale-store.ts';
import { threadMs, turns } from './lib/turns.ts';

const ROUTES = intFromEnv('BENCH_SCALE_SCRAPE_ROUTES', 10000);
const RUNS = intFromEnv('BENCH_SCALE_SCRAPE_RUNS', 5);

interface FamilyCost {
  name: string;
  ms: number;
  chars: number;
  longestPieceMs: number;
}

/** Render each family of `registry` alone, in CPU time (OpenMetrics, as Prometheus asks). */
async function familyCosts(registry: Registry): Promise<FamilyCost[]> {
  const costs: FamilyCost[] = [];
  registry.setContentType('application/openmetrics-text; version=1.0.0; charset=utf-8' as never);
  try {
    for (const metric of registry.getMetricsAsArray() as readonly (object & { name: string })[]) {
      let chars = 0;
      let longest = 0;
      const start = threadMs();
      if (rendersItself(metric)) {
        const pieces = metric.render(true);
        for (;;) {
          const t = threadMs();
          const next = pieces.next();
          longest = Math.max(longest, threadMs() - t);
          if (next.done) break;
          chars += next.value.length;
        }
      } else {
        const name = metric.name;
        if (metric instanceof Counter) metric.name = name.replace(/_total$/, '');
        try {
          const text = await registry.getSingleMetricAsString(name);
          chars = text.length;
        } finally {
          metric.name = name;
        }
        longest = threadMs() - start;
      }
      costs.push({ name: metric.name, ms: threadMs() - start, chars, longestPieceMs: longest });
    }
  } finally {
    registry.setContentType('text/plain; version=0.0.4; charset=utf-8' as never);
  }
  return costs;
}

async function main(): Promise<void> {
  const { store, metrics, close } = await openScaleStore(ROUTES, true);
  const out = (s: string) => process.stdout.write(`${s}\n`);
  out(`${ROUTES} routes, ${scaleUpstreams(ROUTES)} upstreams`);
  try {
    for (const route of store.current.routes.routes) {
      metrics.recordRequest('scale', route.name, 'GET', 200, 0.003, undefined);
      metrics.recordBytes(route.name, 0, 120);
      metrics.recordAttempt(route.upstream ?? 'svc0', 'http://127.0.0.1:9', 'success', 200, 0.002, undefined);
    }
    // The first rounds include the JIT's compiles.
    for (let k = 0; k < 3; k++) await familyCosts(metrics.registry as Registry);
    const costs = await familyCosts(metrics.registry as Registry);
    for (let k = 0; k < 4; k++) {
      for (const [i, c] of (await familyCosts(metrics.registry as Registry)).entries()) {
        costs[i]!.ms = Math.min(costs[i]!.ms, c.ms);
        costs[i]!.longestPieceMs = Math.min(costs[i]!.longestPieceMs, c.longestPieceMs);
      }
    }
    costs.sort((a, b) => b.longestPieceMs - a.longestPieceMs);
    out('family | CPU ms | MB | longest piece ms');
    for (const c of costs.slice(0, 15))
      out(`${c.name} | ${c.ms.toFixed(2)} | ${(c.chars / 1e6).toFixed(2)} | ${c.longestPieceMs.toFixed(2)}`);
    const total = costs.reduce((s, c) => s + c.ms, 0);
    out(`all ${costs.length} families: ${total.toFixed(1)} ms`);

    await withScrapePipe(metrics, async (scrape) => {
      for (let k = 1; k <= RUNS; k++) {
        let chars = 0;
        const start = threadMs();
        const wall = performance.now();
        const t = await turns(async () => {
          chars = await scrape();
        });
        out(
          `scrape ${k}: main thread ${(threadMs() - start).toFixed(0)} ms CPU, ${(performance.now() - wall).toFixed(0)} ms wall, ${(chars / 1e6).toFixed(1)} MB, ${t.turns} turns, longest ${t.longestMs.toFixed(1)} ms`,
        );
      }
    });
  } finally {
    await close();
  }
}

if (import.meta.main) runMain('bench:scale-scrape', main);
