/**
 * A low-rate probe of one rate limit target, for a shared machine: what a request costs in GC and
 * system calls, and its latency at a fixed rate well below saturation (indicative only: the
 * latency includes whatever else the machine runs).
 *
 *   node bench/ratelimit-probe.ts [passthrough|ratelimit|ratelimit-redis]   (default: ratelimit-redis)
 *
 * Starts the bench upstream, for ratelimit-redis a local redis-server, and the gateway with the
 * bench's config and `--trace-gc-nvp`; warms it up with a paced load, then sends exactly
 * PROBE_REQUESTS requests at PROBE_RATE per second (bench/lib/paced.ts, open-loop) and reports
 * p50/p99/max, the scavenges and mark-compacts in that window with their pause times (per 100,000
 * requests) and the bytes scavenges promoted to old space per request, and with PROBE_STRACE=1 the gateway's system calls per request (`strace -c -f`
 * attached for the window; the latency is then strace's, not the gateway's).
 *
 *   PROBE_RATE (1000): requests per second (≤ 1000 on a shared machine)
 *   PROBE_REQUESTS (10000), PROBE_WARMUP (5000)
 *   PROBE_CPU: pin the gateway, and its redis-server, to this CPU (`taskset -a -p`), as
 *     bench:ratelimit's latency group does with BENCH_PIN=1 and BENCH_RL_REDIS_CPU=target
 *   PROBE_REDIS_CPU: pin the redis-server elsewhere instead (a CPU, or `none`)
 *   PROBE_STRACE=1: count system calls in the window
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { intFromEnv } from './lib/env.ts';
import { PacedLoad, pacedFailures } from './lib/paced.ts';
import { peregrineConfigYaml } from './lib/peregrine-config.ts';
import { installCleanup, runMain, stopAll, waitForHttp } from './lib/proc.ts';
import { startBenchRedis } from './lib/redis.ts';
import { summariseLatencies } from './lib/stats.ts';
import { startPeer, startPeregrine } from './lib/targets.ts';

const ROOT = join(import.meta.dirname, '..');
const PROFILES = ['passthrough', 'ratelimit', 'ratelimit-redis'] as const;
type Profile = (typeof PROFILES)[number];

interface GcTally {
  scavenges: number;
  scavengeMs: number;
  markCompacts: number;
  markCompactMs: number;
  maxPauseMs: number;
  promoted: number;
}

/** One `--trace-gc-nvp` line: major or minor, its pause, and the bytes it promoted to old space. */
export function parseTraceGc(line: string): { major: boolean; ms: number; promoted: number } | undefined {
  const kind = / gc=(\w+) /.exec(line);
  if (kind === null) return undefined;
  const pause = / pause=([\d.]+) /.exec(line);
  const promoted = / promoted=(\d+) /.exec(line);
  return {
    major: kind[1] === 'mc',
    ms: pause === null ? 0 : Number(pause[1]),
    promoted: promoted === null ? 0 : Number(promoted[1]),
  };
}

function taskset(cpu: string, pid: number): void {
  execFileSync('taskset', ['-a', '-p', '-c', cpu, String(pid)], { stdio: 'ignore' });
}

async function main(): Promise<void> {
  installCleanup();
  const profile = (process.argv[2] ?? 'ratelimit-redis') as Profile;
  if (!PROFILES.includes(profile))
    throw new Error(`usage: node bench/ratelimit-probe.ts [${PROFILES.join('|')}]`);
  const rate = intFromEnv('PROBE_RATE', 1000);
  const requests = intFromEnv('PROBE_REQUESTS', 10_000);
  const warmup = intFromEnv('PROBE_WARMUP', 5000);
  const cpu = process.env.PROBE_CPU;
  const redisCpu = process.env.PROBE_REDIS_CPU ?? cpu;
  const tmp = mkdtempSync(join(tmpdir(), 'peregrine-rl-probe-'));
  try {
    const upstream = await startPeer({ node: process.execPath, root: ROOT }, 'upstream.ts');
    await waitForHttp(`${upstream.origin}/`, { proc: upstream.proc });
    const redis = profile === 'ratelimit-redis' ? await startBenchRedis('redis-probe') : undefined;
    const gw = await startPeregrine({
      name: `peregrine-${profile}`,
      dir: ROOT,
      configFile: join(tmp, 'peregrine.yaml'),
      yaml: (listenPort, adminPort) =>
        peregrineConfigYaml({
          profile,
          listenPort,
          adminPort,
          upstreamOrigin: upstream.origin,
          redisUrl: redis?.url,
        }),
      nodeArgs: ['--trace-gc-nvp'],
      stdout: 'pipe',
    });
    if (cpu !== undefined) taskset(cpu, gw.proc.pid);
    if (redis !== undefined && redisCpu !== undefined && redisCpu !== 'none')
      taskset(redisCpu, redis.proc.pid);
    let counting = false;
    const gc: GcTally = {
      scavenges: 0,
      scavengeMs: 0,
      markCompacts: 0,
      markCompactMs: 0,
      maxPauseMs: 0,
      promoted: 0,
    };
    let partial = '';
    gw.proc.child.stdout?.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      if (!counting) return;
      for (const line of lines) {
        const g = parseTraceGc(line);
        if (g === undefined) continue;
        if (g.major) {
          gc.markCompacts++;
          gc.markCompactMs += g.ms;
        } else {
          gc.scavenges++;
          gc.scavengeMs += g.ms;
        }
        gc.maxPauseMs = Math.max(gc.maxPauseMs, g.ms);
        gc.promoted += g.promoted;
      }
    });
    const load = new PacedLoad(gw.url, 16);
    await load.run(rate, warmup / rate);
    const straceOut = join(tmp, 'strace.txt');
    const strace =
      process.env.PROBE_STRACE === '1'
        ? spawn('strace', ['-c', '-f', '-o', straceOut, '-p', String(gw.proc.pid)], { stdio: 'ignore' })
        : undefined;
    if (strace !== undefined) await new Promise((r) => setTimeout(r, 1000));
    counting = true;
    const r = await load.run(rate, requests / rate);
    // The last lines of the window are flushed before counting stops.
    await new Promise((res) => setTimeout(res, 200));
    counting = false;
    if (strace !== undefined) {
      strace.kill('SIGINT');
      await new Promise((res) => strace.once('exit', res));
    }
    await load.close();
    const lat = summariseLatencies(r.latenciesMs);
    const per100k = (n: number) => ((n * 100_000) / r.sent).toFixed(1);
    const out = [
      `${profile}: ${r.sent} requests at ${r.rate.toFixed(0)}/s, failed ${pacedFailures(r)}`,
      `latency ms: p50 ${lat?.p50.toFixed(3)} p99 ${lat?.p99.toFixed(3)} max ${lat?.max.toFixed(3)}`,
      `GC per 100k requests: scavenges ${per100k(gc.scavenges)} (${(gc.scavengeMs / Math.max(1, gc.scavenges)).toFixed(2)} ms each), ` +
        `mark-compacts ${per100k(gc.markCompacts)} (${(gc.markCompactMs / Math.max(1, gc.markCompacts)).toFixed(2)} ms each); longest pause ${gc.maxPauseMs.toFixed(2)} ms; promoted ${(gc.promoted / r.sent).toFixed(0)} bytes a request`,
    ];
    if (strace !== undefined) {
      const lines = readFileSync(straceOut, 'utf8').split('\n');
      out.push('system calls per request:');
      for (const line of lines) {
        const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$/.exec(line);
        if (m !== null && m[2] !== 'total' && Number(m[1]) / r.sent >= 0.01)
          out.push(`  ${m[2]!.padEnd(16)} ${(Number(m[1]) / r.sent).toFixed(3)}`);
        const total = /^\s*100\.00\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?total$/.exec(line);
        if (total !== null) out.push(`  ${'total'.padEnd(16)} ${(Number(total[1]) / r.sent).toFixed(3)}`);
      }
    }
    process.stdout.write(`${out.join('\n')}\n`);
    await redis?.proc.stop(2000);
  } finally {
    await stopAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (import.meta.main) runMain('ratelimit-probe', main);
