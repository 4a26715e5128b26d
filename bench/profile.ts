/**
 * CPU profile of a proxy under the bench load: starts the bench upstream (and OTLP sink), runs
 * the proxy under `node --cpu-prof` (Peregrine with the bench config, or one of the Node peers to
 * compare against), loads it with wrk (warmup, then the profiled window), stops it with SIGTERM so
 * the profile is written, and prints the top self-time functions and modules of the profiled
 * window. The .cpuprofile is kept in bench/results/ (open it in Chrome DevTools or speedscope).
 *
 *   node bench/profile.ts [passthrough|observed|bare-undici|express-hpm]
 *   (BENCH_DURATION, BENCH_WARMUP, BENCH_CONNECTIONS as for bench/run.ts)
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { machineCpuWindow, waitForQuiet } from './lib/cpu.ts';
import { type CpuProfile, type SelfTime, summariseProfile } from './lib/cpuprofile.ts';
import { pickLoadGenerator } from './lib/loadgen.ts';
import { peregrineConfigYaml } from './lib/peregrine-config.ts';
import { installCleanup, type Managed, stopAll, waitForHttp } from './lib/proc.ts';
import { fileStamp, fmtMs, fmtNum, markdownTable } from './lib/table.ts';
import { startPeer, startPeregrine } from './lib/targets.ts';

const ROOT = join(import.meta.dirname, '..');
const WHICH = ['passthrough', 'observed', 'bare-undici', 'express-hpm'] as const;
type Which = (typeof WHICH)[number];
const log = (s: string) => process.stderr.write(`${s}\n`);
/** Microseconds on the monotonic clock V8 stamps profiles with. */
const nowUs = () => Number(process.hrtime.bigint() / 1000n);

function table(rows: readonly SelfTime[], what: string): string {
  return markdownTable(
    [what, 'self ms', '% of busy'],
    rows.map((r) => [r.name, fmtMs(r.selfMs), fmtNum(r.pct, 1)]),
    ['left', 'right', 'right'],
  );
}

async function startProfiled(
  which: Which,
  tmp: string,
  profDir: string,
  upstreamOrigin: string,
  otlpEndpoint: string,
): Promise<{ proc: Managed; url: string }> {
  const node = process.execPath;
  const cpuProf = ['--cpu-prof', `--cpu-prof-dir=${profDir}`];
  if (which === 'bare-undici' || which === 'express-hpm') {
    const peer = await startPeer({ node, root: ROOT }, `${which}.ts`, { UPSTREAM: upstreamOrigin }, cpuProf);
    return { proc: peer.proc, url: `${peer.origin}/` };
  }
  return startPeregrine({
    name: `peregrine-${which}`,
    dir: ROOT,
    configFile: join(tmp, 'peregrine.yaml'),
    yaml: (listenPort, adminPort) =>
      peregrineConfigYaml({ profile: which, listenPort, adminPort, upstreamOrigin, otlpEndpoint }),
    nodeArgs: cpuProf,
  });
}

async function main(): Promise<void> {
  installCleanup(log);
  const which = (process.argv[2] ?? 'passthrough') as Which;
  if (!WHICH.includes(which)) throw new Error(`usage: node bench/profile.ts [${WHICH.join('|')}]`);
  const durationS = Number(process.env.BENCH_DURATION ?? 10);
  const warmupS = Number(process.env.BENCH_WARMUP ?? 3);
  const connections = Number(process.env.BENCH_CONNECTIONS ?? 50);
  const loadgen = pickLoadGenerator();
  const node = process.execPath;
  const tmp = mkdtempSync(join(tmpdir(), 'peregrine-profile-'));
  process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
  try {
    const upstream = await startPeer({ node, root: ROOT }, 'upstream.ts');
    const sink = await startPeer({ node, root: ROOT }, 'otlp-sink.ts');
    await waitForHttp(`${upstream.origin}/`, { proc: upstream.proc });
    await waitForHttp(`${sink.origin}/stats`, { proc: sink.proc });
    const profDir = join(tmp, 'prof');
    const { proc, url } = await startProfiled(which, tmp, profDir, upstream.origin, sink.origin);
    await waitForHttp(url, { proc });
    log(
      `profile: ${which}, ${warmupS} s warmup + ${durationS} s profiled window, ${connections} connections`,
    );
    if (warmupS > 0) await loadgen.run(url, { durationS: warmupS, connections });
    const ours = () => [upstream.proc.pid, sink.proc.pid, proc.pid];
    await waitForQuiet(ours, 15, 30_000);
    const machine = machineCpuWindow(ours);
    const from = nowUs();
    const load = await loadgen.run(url, { durationS, connections });
    const to = nowUs();
    const foreign = machine()?.foreignPct;
    await proc.stop(10_000);
    const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
    if (!file)
      throw new Error(`no .cpuprofile written (exit ${JSON.stringify(proc.exit)}):\n${proc.output()}`);
    const p = JSON.parse(readFileSync(join(profDir, file), 'utf8')) as CpuProfile;
    const s = summariseProfile(p, ROOT, [from, to]);

    const resultsDir = join(ROOT, 'bench/results');
    mkdirSync(resultsDir, { recursive: true });
    const kept = join(resultsDir, `${fileStamp()}-${which}.cpuprofile`);
    copyFileSync(join(profDir, file), kept);

    const out = [
      `## CPU profile: ${which}, ${new Date().toISOString()}`,
      '',
      `Load ${loadgen.tool}, ${connections} connections: ${Math.round(load.rps)} req/s, p50 ${fmtMs(load.latencyMs.p50)} ms, ` +
        `p99 ${fmtMs(load.latencyMs.p99)} ms. Profiled window ${fmtNum(s.windowMs / 1000, 1)} s` +
        `${s.wholeProfile ? ' (window not found in the profile: whole profile, start-up included)' : ''}: ` +
        `busy ${fmtNum(s.busyMs / 1000, 2)} s, idle ${fmtNum(s.idleMs / 1000, 2)} s; ` +
        `${fmtNum((s.busyMs * 1000) / Math.max(load.requests, 1), 1)} µs of main-thread CPU per request. ` +
        `Other processes on the machine used ${fmtNum(foreign, 0)}% of a core meanwhile.`,
      '',
      '### Self time by group',
      '',
      markdownTable(
        ['group', 'self ms', '% of busy', 'µs per request'],
        s.groups.map((g) => [
          g.name,
          fmtMs(g.selfMs),
          fmtNum(g.pct, 1),
          fmtNum((g.selfMs * 1000) / Math.max(load.requests, 1), 1),
        ]),
        ['left', 'right', 'right', 'right'],
      ),
      '',
      '### Self time by module',
      '',
      table(s.modules.slice(0, 15), 'module'),
      '',
      '### Top functions by self time',
      '',
      table(s.functions, 'function'),
      '',
      `Profile: ${relative(process.cwd(), kept)}`,
    ];
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    await stopAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  async (err: unknown) => {
    log(`profile failed: ${(err as Error).stack ?? String(err)}`);
    await stopAll();
    process.exit(1);
  },
);
