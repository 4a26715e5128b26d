/**
 * System calls and event-loop iterations per request, at a low fixed rate: the target runs under
 * `strace -f --seccomp-bpf`, which stops it only on the calls traced (read, write, writev,
 * epoll_pwait), while a paced load (bench/lib/paced.ts) sends a fixed number of requests; the
 * calls whose timestamps fall inside that window are counted. epoll_pwait counts loop iterations:
 * libuv polls once without waiting, then once more with the timeout when nothing was ready (Node
 * turns its idle-time metrics on), so an iteration that finds work costs one call and one that goes
 * idle two. Indicative only: strace slows every traced call, so keep the rate low (≤ 500/s).
 *
 *   node bench/syscalls.ts [passthrough|observed|bare-undici …]   (default: bare-undici passthrough)
 *   BENCH_SYSCALLS_RATE (200): requests per second
 *   BENCH_SYSCALLS_SECONDS (5): seconds counted (after 3 s of warmup at the same rate)
 *   BENCH_SYSCALLS_CONNECTIONS (10): most connections of the load
 *   BENCH_PEREGRINE_DIR: measure the Peregrine in that directory (e.g. `git archive` of a commit)
 *   BENCH_SYSCALLS_TRACE=1: keep strace's whole output (timestamped, every traced call of the
 *     window) in bench/results/, to read a request's calls and wake-ups in order
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { intFromEnv } from './lib/env.ts';
import { runPaced } from './lib/paced.ts';
import { peregrineConfigYaml } from './lib/peregrine-config.ts';
import { findExecutable, installCleanup, type Managed, runMain, stopAll, waitForHttp } from './lib/proc.ts';
import { fileStamp, fmtNum, markdownTable } from './lib/table.ts';
import { startPeer, startPeregrine, startUpstreamAndSink } from './lib/targets.ts';

const ROOT = join(import.meta.dirname, '..');
const PEREGRINE_DIR = process.env.BENCH_PEREGRINE_DIR || ROOT;
const WHICH = ['passthrough', 'observed', 'bare-undici'] as const;
type Which = (typeof WHICH)[number];
const CALLS = ['read', 'write', 'writev', 'epoll_pwait'] as const;
const WARMUP_S = 3;
const log = (s: string) => process.stderr.write(`${s}\n`);

interface Counted {
  which: Which;
  requests: number;
  p50Ms: number;
  perRequest: Record<(typeof CALLS)[number], number>;
}

/** The calls of `strace -ttt` lines timed within [from, to] (epoch seconds), by name. */
export function countCalls(text: string, from: number, to: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of text.split('\n')) {
    // `<pid> <epoch.micros> <name>(…` (and `<... name resumed>` for calls interrupted by another thread)
    const m = /^\d+\s+(\d+\.\d+) (?:<\.\.\. )?(\w+)[( ]/.exec(line);
    if (m === null || line.includes('resumed>')) continue;
    const at = Number(m[1]);
    if (at < from || at > to) continue;
    counts.set(m[2]!, (counts.get(m[2]!) ?? 0) + 1);
  }
  return counts;
}

async function measure(
  which: Which,
  strace: string,
  tmp: string,
  upstream: string,
  otlp: string | undefined,
) {
  const rate = intFromEnv('BENCH_SYSCALLS_RATE', 200, 1);
  const seconds = intFromEnv('BENCH_SYSCALLS_SECONDS', 5, 1);
  const connections = intFromEnv('BENCH_SYSCALLS_CONNECTIONS', 10, 1);
  const out = join(tmp, `${which}.strace`);
  const args = ['-f', '--seccomp-bpf', '-e', `trace=${CALLS.join(',')}`, '-ttt', '-o', out];
  let proc: Managed;
  let url: string;
  if (which === 'bare-undici') {
    const peer = await startPeer({ node: strace, root: ROOT }, 'bare-undici.ts', { UPSTREAM: upstream }, [
      ...args,
      process.execPath,
    ]);
    proc = peer.proc;
    url = `${peer.origin}/`;
    await waitForHttp(url, { proc, timeoutMs: 30_000 });
  } else {
    const gw = await startPeregrine({
      name: which,
      dir: PEREGRINE_DIR,
      configFile: join(tmp, `${which}.yaml`),
      yaml: (listenPort, adminPort) =>
        peregrineConfigYaml({
          profile: which,
          listenPort,
          adminPort,
          upstreamOrigin: upstream,
          otlpEndpoint: otlp,
        }),
      wrap: { command: strace, args },
      readyTimeoutMs: 30_000,
    });
    proc = gw.proc;
    url = gw.url;
  }
  try {
    await runPaced(url, { rate, durationS: WARMUP_S, connections });
    const from = Date.now() / 1000;
    const r = await runPaced(url, { rate, durationS: seconds, connections });
    const to = Date.now() / 1000;
    await proc.stop(5000);
    const text = readFileSync(out, 'utf8');
    if (process.env.BENCH_SYSCALLS_TRACE === '1') {
      const kept = join(ROOT, 'bench/results', `${fileStamp()}-${which}.strace`);
      mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
      copyFileSync(out, kept);
      log(`${which}: strace output kept in ${kept}`);
    }
    const counts = countCalls(text, from, to);
    const n = r.latenciesMs.length;
    const sorted = [...r.latenciesMs].sort((a, b) => a - b);
    const perRequest = Object.fromEntries(
      CALLS.map((c) => [c, (counts.get(c) ?? 0) / n]),
    ) as Counted['perRequest'];
    return { which, requests: n, p50Ms: sorted[n >> 1] ?? 0, perRequest, rate, connections };
  } finally {
    await proc.stop(5000);
  }
}

async function main(): Promise<void> {
  installCleanup(log);
  const strace = findExecutable('strace', ['/usr/bin', '/usr/local/bin']);
  if (strace === undefined) throw new Error('strace not found (Debian/Ubuntu: apt-get install strace)');
  const asked = process.argv.slice(2);
  for (const a of asked)
    if (!(WHICH as readonly string[]).includes(a)) throw new Error(`unknown target ${a}`);
  const targets = (asked.length > 0 ? asked : ['bare-undici', 'passthrough']) as Which[];
  const tmp = mkdtempSync(join(tmpdir(), 'peregrine-syscalls-'));
  try {
    const { upstream, otlp } = await startUpstreamAndSink(
      { node: process.execPath, root: ROOT },
      targets.includes('observed'),
    );
    const rows: string[][] = [];
    let setting = '';
    for (const which of targets) {
      log(`${which}: under strace`);
      const m = await measure(which, strace, tmp, upstream, otlp);
      setting = `${m.rate} req/s over at most ${m.connections} connections`;
      rows.push([
        which,
        String(m.requests),
        fmtNum(m.p50Ms, 2),
        ...CALLS.map((c) => fmtNum(m.perRequest[c], 2)),
      ]);
    }
    process.stdout.write(
      `## System calls per request (strace), ${new Date().toISOString()}\n\n${setting}; indicative only (strace slows the traced calls).\n\n` +
        `${markdownTable(['target', 'requests', 'p50 ms', ...CALLS], rows)}\n`,
    );
  } finally {
    await stopAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (import.meta.main) runMain('syscalls', main);
