/**
 * What a renewal costs the gateway, counted rather than timed: the heartbeats group's fleet
 * (1,000 instances renewing every 5 s, bench/peers/heartbeats.ts) against a gateway with the
 * memory or the Redis store, and over a window of its renewals:
 *
 * - the gateway's CPU time (user + system, all threads, /proc) per 1,000 renewals: unlike a
 *   percentage of wall time, this hardly moves when other processes share the cores;
 * - Redis commands per renewal (INFO commandstats, scripts' inner calls included) and script
 *   calls (EVALSHA) alone;
 * - with BENCH_COUNTS_STRACE=1, system calls per renewal (`strace -c -f` attached to every
 *   thread for the window; strace slows the calls it stops, so read its counts, not its times).
 *
 *   node bench/registry-counts.ts [memory|redis …]   (default: memory redis)
 *   BENCH_COUNTS_WINDOW (20): seconds counted, after one renewal interval of settling
 *   BENCH_COUNTS_INSTANCES (1000)
 *   BENCH_PEREGRINE_DIR: the Peregrine to measure (e.g. `git archive` of a commit)
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpuMs } from './lib/cpu.ts';
import { intFromEnv } from './lib/env.ts';
import { askPeer, findExecutable, freePort, installCleanup, type Managed, runMain } from './lib/proc.ts';
import { metricSum, scrapeMetrics } from './lib/prom.ts';
import { startBenchRedis } from './lib/redis.ts';
import { benchRegistryToken, REGISTRY_TOKEN_ENV, registryGatewayYaml } from './lib/registry-config.ts';
import { fmtNum, markdownTable } from './lib/table.ts';
import { startPeer, startPeregrine } from './lib/targets.ts';
import type { FleetStats } from './peers/heartbeats.ts';

const ROOT = join(import.meta.dirname, '..');
const PEREGRINE_DIR = process.env.BENCH_PEREGRINE_DIR || ROOT;
const TTL_MS = 15_000;
const SERVICES = 10;
const log = (s: string) => process.stderr.write(`${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Store = 'memory' | 'redis';

interface Counts {
  store: Store;
  renewals: number;
  cpuMsPer1000: number;
  redisCallsPerRenewal?: number;
  scriptsPerRenewal?: number;
  redisByCommand?: Record<string, number>;
  syscallsPerRenewal?: Record<string, number>;
  failures: number;
}

/** INFO commandstats as calls per command. */
function commandStats(port: number): Map<string, number> {
  const text = execFileSync('redis-cli', ['-p', String(port), 'info', 'commandstats'], { encoding: 'utf8' });
  const calls = new Map<string, number>();
  for (const m of text.matchAll(/^cmdstat_([\w|]+):calls=(\d+)/gm)) calls.set(m[1]!, Number(m[2]));
  return calls;
}

/** `strace -c -f` attached to every thread of `pid`; stop() gives its table's calls by name. */
function attachStrace(pid: number, out: string): { stop: () => Promise<Map<string, number>> } {
  const strace = findExecutable('strace');
  if (strace === undefined) throw new Error('strace not found');
  const tids = readdirSync(`/proc/${pid}/task`);
  const child: ChildProcess = spawn(strace, ['-c', '-f', '-o', out, ...tids.flatMap((t) => ['-p', t])], {
    stdio: 'ignore',
  });
  return {
    stop: () =>
      new Promise((resolve) => {
        child.once('exit', () => {
          const calls = new Map<string, number>();
          for (const line of readFileSync(out, 'utf8').split('\n')) {
            // % time, seconds, usecs/call, calls, [errors,] syscall
            const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$/.exec(line);
            if (m && m[2] !== 'total') calls.set(m[2]!, Number(m[1]));
          }
          resolve(calls);
        });
        child.kill('SIGINT');
      }),
  };
}

async function measure(store: Store, tmp: string): Promise<Counts> {
  const instances = intFromEnv('BENCH_COUNTS_INSTANCES', 1000, 1);
  const windowS = intFromEnv('BENCH_COUNTS_WINDOW', 20, 1);
  const withStrace = process.env.BENCH_COUNTS_STRACE === '1';
  const redis = store === 'redis' ? await startBenchRedis('redis-counts') : undefined;
  const port = await freePort();
  let gw: { proc: Managed; admin: string } | undefined;
  let fleet: Managed | undefined;
  try {
    gw = await startPeregrine({
      name: `peregrine-counts-${store}`,
      dir: PEREGRINE_DIR,
      configFile: join(tmp, `${store}.yaml`),
      yaml: (listenPort, adminPort) =>
        registryGatewayYaml({
          listenPort,
          adminPort,
          port,
          store,
          redisUrl: redis?.url,
          services: ['hb-*'],
          upstreams: Array.from({ length: SERVICES }, (_, k) => `hb-${k}`),
          rateLimit: { perSecond: 100_000, burst: 100_000 },
          maxInstancesPerService: instances,
        }),
      env: { [REGISTRY_TOKEN_ENV]: benchRegistryToken() },
      stdout: 'pipe',
    });
    const started = await startPeer({ node: process.execPath, root: ROOT }, 'heartbeats.ts', {
      REGISTRY: `http://127.0.0.1:${port}`,
      INSTANCES: String(instances),
      SERVICES: String(SERVICES),
      TTL_MS: String(TTL_MS),
      RAMP_MS: '5000',
      [REGISTRY_TOKEN_ENV]: benchRegistryToken(),
    });
    fleet = started.proc;
    for (const deadline = Date.now() + 90_000; ; ) {
      const st = await askPeer<FleetStats>(fleet, 'stats', 2000).catch(() => undefined);
      if (st?.started === instances) break;
      if (Date.now() > deadline) throw new Error(`the fleet did not register: ${JSON.stringify(st)}`);
      await sleep(500);
    }
    await sleep(TTL_MS / 3);
    const redisPort = redis === undefined ? undefined : Number(new URL(redis.url).port);
    const pid = gw.proc.pid;
    const f0 = await askPeer<FleetStats>(fleet, 'stats', 2000);
    const m0 = metricSum(await scrapeMetrics(gw.admin), 'peregrine_registry_renewals_total');
    const c0 = redisPort === undefined ? undefined : commandStats(redisPort);
    const trace = withStrace ? attachStrace(pid, join(tmp, `${store}.strace`)) : undefined;
    if (trace) await sleep(500);
    const cpu0 = cpuMs(pid)!;
    await sleep(windowS * 1000);
    const cpu1 = cpuMs(pid)!;
    const syscalls = await trace?.stop();
    const c1 = redisPort === undefined ? undefined : commandStats(redisPort);
    const m1 = metricSum(await scrapeMetrics(gw.admin), 'peregrine_registry_renewals_total');
    const f1 = await askPeer<FleetStats>(fleet, 'stats', 2000);
    // Renewals in the CPU window: the counter's delta (its scrapes fall just outside the window).
    const renewals = m1 - m0;
    const result: Counts = {
      store,
      renewals,
      cpuMsPer1000: ((cpu1 - cpu0) / renewals) * 1000,
      failures: f1.failures - f0.failures,
    };
    if (c0 && c1) {
      const by: Record<string, number> = {};
      let total = 0;
      for (const [name, calls] of c1) {
        const d = calls - (c0.get(name) ?? 0);
        // The two INFO calls of the measurement itself are left out.
        if (d > 0 && name !== 'info') {
          by[name] = d / renewals;
          total += d;
        }
      }
      result.redisCallsPerRenewal = total / renewals;
      result.scriptsPerRenewal = (by.evalsha ?? 0) + (by.eval ?? 0);
      result.redisByCommand = by;
    }
    if (syscalls) {
      const by: Record<string, number> = {};
      for (const [name, calls] of syscalls) by[name] = calls / renewals;
      result.syscallsPerRenewal = by;
    }
    return result;
  } finally {
    await fleet?.stop(2000);
    await gw?.proc.stop(5000);
    await redis?.proc.stop(2000);
  }
}

async function main(): Promise<void> {
  installCleanup(log);
  const stores = (process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['memory', 'redis']) as Store[];
  for (const s of stores) if (s !== 'memory' && s !== 'redis') throw new Error(`unknown store ${s}`);
  const tmp = mkdtempSync(join(tmpdir(), 'peregrine-counts-'));
  const results: Counts[] = [];
  try {
    for (const store of stores) {
      log(`counting ${store}…`);
      results.push(await measure(store, tmp));
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  const rows = results.map((r) => [
    r.store,
    String(r.renewals),
    fmtNum(r.cpuMsPer1000, 1),
    r.redisCallsPerRenewal === undefined ? '' : fmtNum(r.redisCallsPerRenewal, 3),
    r.scriptsPerRenewal === undefined ? '' : fmtNum(r.scriptsPerRenewal, 3),
    r.syscallsPerRenewal === undefined
      ? ''
      : Object.entries(r.syscallsPerRenewal)
          .filter(([, n]) => n >= 0.01)
          .sort((a, b) => b[1] - a[1])
          .map(([k, n]) => `${k} ${fmtNum(n, 2)}`)
          .join(', '),
    String(r.failures),
  ]);
  process.stdout.write(
    `${markdownTable(
      [
        'store',
        'renewals',
        'gateway CPU ms per 1,000 renewals',
        'Redis commands per renewal',
        'scripts per renewal',
        'system calls per renewal',
        'client failures',
      ],
      rows,
    )}\n`,
  );
  for (const r of results)
    if (r.redisByCommand)
      process.stdout.write(
        `${r.store}: Redis calls per renewal by command: ${Object.entries(r.redisByCommand)
          .map(([k, n]) => `${k} ${fmtNum(n, 3)}`)
          .join(', ')}\n`,
      );
}

if (import.meta.main) runMain('bench:registry-counts', main);
