/**
 * `node bench/scale-cpu.ts`: the CPU a reload and a scrape cost at scale, in CPU time rather than
 * wall time, so that it means something on a shared machine (bench/scale.ts measures wall time
 * and needs a quiet one). In this process: a ConfigStore on the configuration of bench:scale
 * (bench/lib/scale-config.ts), then BENCH_SCALE_CPU_RELOADS reloads that each add a route, and
 * BENCH_SCALE_CPU_SCRAPES OpenMetrics scrapes after one request to every route, written to a
 * pipe to another process. Per reload: this process's CPU (process.cpuUsage), the loader child's (from
 * /proc), the longest turn of the event loop as the main thread's CPU between 1 ms ticks
 * (process.threadCpuUsage), and how many route paths this process compiled. Per scrape: the main
 * thread's CPU, the characters and the longest turn. Linux only (reads /proc).
 *
 * Environment: BENCH_SCALE_CPU_ROUTES (10000), BENCH_SCALE_CPU_RELOADS (5),
 * BENCH_SCALE_CPU_SCRAPES (3).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { intFromEnv } from './lib/env.ts';
import { runMain } from './lib/proc.ts';
import { scaleConfigYaml, scaleUpstreams } from './lib/scale-config.ts';
import { openScaleStore, withScrapePipe } from './lib/scale-store.ts';

const ROUTES = intFromEnv('BENCH_SCALE_CPU_ROUTES', 10000);
const RELOADS = intFromEnv('BENCH_SCALE_CPU_RELOADS', 5);
const SCRAPES = intFromEnv('BENCH_SCALE_CPU_SCRAPES', 3);

const ms = (u: NodeJS.CpuUsage): number => (u.user + u.system) / 1000;
const threadMs = (): number => ms(process.threadCpuUsage());

/** utime + stime of a process in ms, from /proc (clock ticks of 10 ms). */
function procCpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** CPU of this process's children: those running, and those it has waited for. */
function childrenCpuMs(): number {
  const self = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  let total = (Number(self[13]) + Number(self[14])) * 10;
  const pids = readFileSync(`/proc/self/task/${process.pid}/children`, 'utf8').trim().split(' ');
  for (const pid of pids.filter(Boolean)) {
    try {
      total += procCpuMs(Number(pid));
    } catch {
      // exited meanwhile: counted in the waited-for total
    }
  }
  return total;
}

/** The main thread's longest stretch of CPU between two 1 ms ticks, while `run` runs. */
async function longestTurn<T>(run: () => Promise<T>): Promise<{ result: T; longestMs: number }> {
  let longest = 0;
  let last = threadMs();
  const tick = setInterval(() => {
    const now = threadMs();
    longest = Math.max(longest, now - last);
    last = now;
  }, 1);
  try {
    return { result: await run(), longestMs: longest };
  } finally {
    clearInterval(tick);
  }
}

async function main(): Promise<void> {
  const { store, metrics, file, options, close } = await openScaleStore(ROUTES, false);
  const out = (s: string) => process.stdout.write(`${s}\n`);
  out(`${ROUTES} routes, ${scaleUpstreams(ROUTES)} upstreams`);
  try {
    for (let k = 1; k <= RELOADS; k++) {
      writeFileSync(file, scaleConfigYaml({ ...options, extraRoutes: k }));
      const children = childrenCpuMs();
      const own = process.cpuUsage();
      const { result, longestMs } = await longestTurn(() => store.reload('bench'));
      const ownMs = ms(process.cpuUsage(own));
      out(
        `reload ${k}: ${result.ok ? 'ok' : 'failed'}; gateway ${ownMs.toFixed(0)} ms, loader child ${childrenCpuMs() - children} ms, longest turn ${longestMs.toFixed(1)} ms`,
      );
    }
    for (const route of store.current.routes.routes)
      metrics.recordRequest('scale', route.name, 'GET', 200, 0.003, undefined);
    await withScrapePipe(metrics, async (scrape) => {
      for (let k = 1; k <= SCRAPES; k++) {
        const start = threadMs();
        const { result: chars, longestMs } = await longestTurn(scrape);
        out(
          `scrape ${k}: main thread ${(threadMs() - start).toFixed(0)} ms, ${(chars / 1e6).toFixed(1)} MB, longest turn ${longestMs.toFixed(1)} ms`,
        );
      }
    });
  } finally {
    await close();
  }
}

if (import.meta.main) runMain('bench:scale-cpu', main);
