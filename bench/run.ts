/**
 * `npm run bench`: one run on this machine comparing Peregrine with the bare minimum (an undici
 * forwarder), what Node users reach for (express + http-proxy-middleware), nginx, and the upstream
 * itself. Each target runs in its own process and is loaded by wrk from another; the whole
 * sequence runs twice, forward then reversed, and the mean per target is reported, with the ratios
 * Peregrine aims for. The report (markdown) goes to stdout, progress to stderr, and the raw results
 * to bench/results/<date>.json.
 *
 * Environment: BENCH_DURATION (s, default 10), BENCH_WARMUP (s, 3), BENCH_CONNECTIONS (50),
 * BENCH_THREADS (wrk threads, 1), BENCH_ROUNDS (2), BENCH_TARGETS (comma-separated ids, all),
 * BENCH_LOADGEN (wrk | autocannon), BENCH_QUIET_WAIT (s, 30: how long to wait before each target
 * for other processes to leave the CPU alone), BENCH_RETRIES (2: measured runs repeated when other
 * processes took more than 15% of a core), BENCH_PEREGRINE_DIR (measure the Peregrine in that
 * directory instead of a snapshot of this checkout's src/ taken at start), BENCH_KEEP_TMP=1 (keep
 * generated configs and logs).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { cpuWindow, machineCpuWindow, waitForQuiet } from './lib/cpu.ts';
import { type LoadResult, totalErrors } from './lib/load.ts';
import { type LoadGenerator, pickLoadGenerator } from './lib/loadgen.ts';
import { machineInfo } from './lib/machine.ts';
import { peregrineConfigYaml } from './lib/peregrine-config.ts';
import { findExecutable, installCleanup, spawnManaged, stopAll, waitForHttp } from './lib/proc.ts';
import { checks, type Measurement, markdownReport, type Settings, summarise } from './lib/report.ts';
import { RssSampler, treeRssKiB } from './lib/rss.ts';
import { snapshotPeregrine } from './lib/snapshot.ts';
import { fmtInt, fmtMs, fmtNum } from './lib/table.ts';
import {
  type BenchContext,
  childEnv,
  type RunningTarget,
  startPeer,
  TARGETS,
  type Target,
} from './lib/targets.ts';

const ROOT = join(import.meta.dirname, '..');
/** BENCH_PEREGRINE_DIR: measure the Peregrine in another checkout (e.g. a snapshot of a commit). */
const PEREGRINE_DIR = resolve(process.env.BENCH_PEREGRINE_DIR ?? ROOT);

/** Fail early, with its own words, when the Peregrine under test does not even load a config. */
async function preflight(peregrineDir: string, tmpDir: string): Promise<void> {
  const config = join(tmpDir, 'preflight.yaml');
  writeFileSync(
    config,
    peregrineConfigYaml({
      profile: 'passthrough',
      listenPort: 1,
      adminPort: 2,
      upstreamOrigin: 'http://127.0.0.1:3',
    }),
  );
  const proc = spawnManaged(
    'peregrine validate',
    process.execPath,
    [join(peregrineDir, 'src/main.ts'), 'validate', config],
    {
      env: childEnv(),
      cwd: peregrineDir,
    },
  );
  const exit = await proc.exited;
  if (exit.code !== 0) throw new Error(`Peregrine in ${peregrineDir} does not run:\n${proc.output()}`);
}
/**
 * Other processes (% of one core) tolerated: before each target the bench waits for less, and a
 * measured run during which they used more is repeated (up to BENCH_RETRIES times).
 */
const FOREIGN_PCT = 15;
const log = (s: string) => process.stderr.write(`${s}\n`);

function intFromEnv(name: string, fallback: number, min = 1): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min)
    throw new Error(`${name} must be an integer ≥ ${min}, not ${JSON.stringify(raw)}`);
  return n;
}

function readSettings(): Settings {
  return {
    durationS: intFromEnv('BENCH_DURATION', 10),
    warmupS: intFromEnv('BENCH_WARMUP', 3, 0),
    connections: intFromEnv('BENCH_CONNECTIONS', 50),
    threads: intFromEnv('BENCH_THREADS', 1),
    rounds: intFromEnv('BENCH_ROUNDS', 2),
    quietWaitS: intFromEnv('BENCH_QUIET_WAIT', 30, 0),
    retries: intFromEnv('BENCH_RETRIES', 2, 0),
  };
}

function selectTargets(): Target[] {
  const wanted = process.env.BENCH_TARGETS?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (!wanted?.length) return [...TARGETS];
  const unknown = wanted.filter((w) => !TARGETS.some((t) => t.id === w));
  if (unknown.length) {
    throw new Error(
      `BENCH_TARGETS: unknown ${unknown.join(', ')}; known: ${TARGETS.map((t) => t.id).join(', ')}`,
    );
  }
  return TARGETS.filter((t) => wanted.includes(t.id));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Attempt {
  load: LoadResult;
  cpu: Measurement['cpu'];
  machineCpu: Measurement['machineCpu'];
}

/** One measured load run with the CPU accounting around it. */
async function measuredRun(
  ctx: BenchContext,
  running: RunningTarget,
  loadgen: LoadGenerator,
  settings: Settings,
): Promise<Attempt> {
  const targetCpu = cpuWindow(running.pid);
  const upstreamCpu = cpuWindow(ctx.upstream.proc.pid);
  const machineCpu = machineCpuWindow(() => [running.pid, ctx.upstream.proc.pid, ctx.otlp.proc.pid]);
  const load = await loadgen.run(running.url, {
    durationS: settings.durationS,
    connections: settings.connections,
    threads: settings.threads,
  });
  const t = targetCpu();
  const u = upstreamCpu();
  return {
    load,
    machineCpu: machineCpu(),
    cpu:
      t && u
        ? {
            targetPct: t.pctOfCore,
            targetUsPerReq: (t.ms * 1000) / Math.max(load.requests, 1),
            upstreamPct: u.pctOfCore,
          }
        : undefined,
  };
}

async function measure(
  ctx: BenchContext,
  target: Target,
  loadgen: LoadGenerator,
  settings: Settings,
  round: number,
  position: number,
): Promise<Measurement> {
  const m: Measurement = { target: target.id, label: target.label, round, position };
  const tag = `[run ${round}] ${target.id}`;
  const skip = target.skipReason?.(ctx);
  if (skip) {
    log(`${tag}: ${skip}`);
    m.skipped = skip;
    return m;
  }
  const shared = () => [ctx.upstream.proc.pid, ctx.otlp.proc.pid];
  const quiet = await waitForQuiet(shared, FOREIGN_PCT, settings.quietWaitS * 1000);
  log(
    `${tag}: starting (other processes ${fmtNum(quiet.foreignPct, 0)}% of a core` +
      `${quiet.waitedMs > 1500 ? ` after waiting ${fmtNum(quiet.waitedMs / 1000, 0)} s for quiet` : ''})`,
  );
  let running: RunningTarget | undefined;
  try {
    running = await target.start(ctx);
    const r = running;
    m.rssIdleMB = (treeRssKiB(r.pid) ?? 0) / 1024;
    const sampler = new RssSampler(r.pid);
    try {
      if (settings.warmupS > 0) {
        m.warmup = await loadgen.run(r.url, {
          durationS: settings.warmupS,
          connections: settings.connections,
          threads: settings.threads,
        });
      }
      // Measure; if other processes took a real share of the CPU meanwhile, wait for quiet and
      // measure again (bounded), keeping the least disturbed attempt.
      let best: Attempt | undefined;
      for (let attempt = 1; ; attempt++) {
        const a = await measuredRun(ctx, r, loadgen, settings);
        m.requestsSent = (m.requestsSent ?? m.warmup?.requests ?? 0) + a.load.requests;
        const foreign = a.machineCpu?.foreignPct ?? 0;
        if (!best || foreign < (best.machineCpu?.foreignPct ?? 0)) best = a;
        m.attempts = attempt;
        if (foreign <= FOREIGN_PCT || attempt > settings.retries) break;
        log(
          `${tag}: other processes used ${fmtNum(foreign, 0)}% of a core (${fmtInt(a.load.rps)} req/s); ` +
            `measuring again (${attempt}/${settings.retries})`,
        );
        await waitForQuiet(() => [...shared(), r.pid], FOREIGN_PCT, settings.quietWaitS * 1000);
      }
      m.load = best.load;
      m.cpu = best.cpu;
      m.machineCpu = best.machineCpu;
    } finally {
      m.rssMaxMB = sampler.stop().maxMB;
    }
    await r.stop();
    if (r.after) m.extra = await r.after();
    const l = m.load;
    log(
      `${tag}: ${fmtInt(l.rps)} req/s, p50 ${fmtMs(l.latencyMs.p50)} ms, p99 ${fmtMs(l.latencyMs.p99)} ms, ` +
        `max RSS ${fmtNum(m.rssMaxMB, 1)} MB, CPU ${fmtNum(m.cpu?.targetPct, 0)}% ` +
        `(${fmtNum(m.cpu?.targetUsPerReq, 1)} µs/req; upstream ${fmtNum(m.cpu?.upstreamPct, 0)}%, ` +
        `loadgen+bench ${fmtNum(m.machineCpu?.benchPct, 0)}%, softirq ${fmtNum(m.machineCpu?.softirqPct, 0)}%, ` +
        `other ${fmtNum(m.machineCpu?.foreignPct, 0)}%), errors ${totalErrors(l)}` +
        `${m.extra ? `, ${JSON.stringify(m.extra)}` : ''}`,
    );
  } catch (err) {
    m.error = (err as Error).message;
    log(`${tag}: FAILED: ${m.error}`);
    await running?.stop().catch(() => {});
  }
  return m;
}

function notesFor(measurements: readonly Measurement[], settings: Settings): string[] {
  const notes = [
    'Peregrine metrics (prom-client histograms and counters) cannot be disabled: both Peregrine targets pay for them.',
    'Passthrough: access log off, tracing exporter none with sampleRatio 0 (ids are still generated and a traceparent is still sent upstream).',
    'Observed: access log on (JSON lines to a file), OTLP/HTTP trace export to an in-bench sink at sampleRatio 0.1.',
    `Two cores are shared by wrk, the target and the upstream (and the OTLP sink): absolute numbers say little; compare the ratios, all taken from this one run.`,
  ];
  for (const m of measurements) {
    if (!m.load) continue;
    const errors = totalErrors(m.load);
    if (errors > 0) {
      notes.push(
        `${m.target} (run ${m.round}): ${errors} failed requests of ${m.load.requests} ` +
          `(socket errors ${JSON.stringify(m.load.errors)}, ≥400 responses ${m.load.non2xx3xx}).`,
      );
    }
  }
  for (const m of measurements) {
    if (m.target !== 'peregrine-observed' || !m.extra || !m.load) continue;
    const sent = m.requestsSent ?? m.load.requests;
    const spans = m.extra.otlpSpans ?? 0;
    notes.push(
      `peregrine-observed (run ${m.round}): ${fmtInt(m.extra.accessLogLines)} access-log lines for ${fmtInt(sent)} requests ` +
        `(warmup and every measured attempt; wrk does not count the ones in flight when it stops); the OTLP sink received ${fmtInt(m.extra.otlpExports)} exports with ${fmtInt(spans)} spans ` +
        `(${fmtNum((spans / Math.max(sent, 1)) * 100, 1)} spans per 100 requests; a sampled request makes a server and a client span).`,
    );
  }
  const noisy = measurements.filter((m) => (m.machineCpu?.foreignPct ?? 0) > FOREIGN_PCT);
  if (noisy.length) {
    notes.push(
      `Other processes (not the bench's) used more than ${FOREIGN_PCT}% of a core, even after ${settings.retries} retries, during: ${noisy
        .map((m) => `${m.target} run ${m.round} (${fmtNum(m.machineCpu?.foreignPct, 0)}%)`)
        .join(', ')}. Those numbers are skewed low.`,
    );
  }
  if (settings.rounds < 2)
    notes.push('Only one round: the order was not alternated, drift is not cancelled.');
  return notes;
}

async function main(): Promise<void> {
  installCleanup(log);
  const settings = readSettings();
  const targets = selectTargets();
  const loadgen = pickLoadGenerator();
  const nginxPath = findExecutable('nginx', ['/usr/sbin', '/usr/local/sbin', '/usr/local/nginx/sbin']);
  const wrkPath = loadgen.tool === 'wrk' ? findExecutable('wrk', ['/usr/local/bin', '/usr/bin']) : undefined;
  const machine = machineInfo({ tool: loadgen.tool, path: wrkPath }, nginxPath, PEREGRINE_DIR);
  const tmpDir = mkdtempSync(join(tmpdir(), 'peregrine-bench-'));
  // Also on Ctrl-C, which exits from the signal handler without reaching the finally below.
  const removeTmp = () => rmSync(tmpDir, { recursive: true, force: true });
  if (!process.env.BENCH_KEEP_TMP) process.on('exit', removeTmp);
  const measurements: Measurement[] = [];
  try {
    // Freeze the code under test (others may be editing src/ meanwhile), unless told where it is.
    const peregrineDir = process.env.BENCH_PEREGRINE_DIR ? PEREGRINE_DIR : snapshotPeregrine(ROOT, tmpDir);
    await preflight(peregrineDir, tmpDir);
    const node = process.execPath;
    const upstream = await startPeer({ node, root: ROOT }, 'upstream.ts');
    const otlp = await startPeer({ node, root: ROOT }, 'otlp-sink.ts');
    await waitForHttp(`${upstream.origin}/`, { proc: upstream.proc });
    await waitForHttp(`${otlp.origin}/stats`, { proc: otlp.proc });
    const ctx: BenchContext = {
      node,
      root: ROOT,
      peregrineDir,
      tmpDir,
      upstream: { origin: upstream.origin, proc: upstream.proc },
      otlp: { endpoint: otlp.origin, proc: otlp.proc },
      nginxPath,
    };
    log(
      `bench: ${targets.length} targets × ${settings.rounds} runs, ${settings.warmupS} s warmup + ${settings.durationS} s each, ` +
        `${settings.connections} connections, load generator ${loadgen.label}; upstream ${upstream.origin}`,
    );
    for (let round = 1; round <= settings.rounds; round++) {
      const order = round % 2 === 1 ? targets : [...targets].reverse();
      for (const [i, target] of order.entries()) {
        measurements.push(await measure(ctx, target, loadgen, settings, round, i + 1));
        await sleep(1000); // let sockets in TIME_WAIT and the upstream settle
      }
    }
  } finally {
    await stopAll();
    if (process.env.BENCH_KEEP_TMP) log(`bench: generated files kept in ${tmpDir}`);
    else removeTmp();
  }

  const summaries = summarise(measurements, targets);
  const cs = checks(summaries);
  const notes = notesFor(measurements, settings);
  const report = {
    machine,
    settings,
    loadGeneratorLabel: loadgen.label,
    measurements,
    summaries,
    checks: cs,
    notes,
  };
  process.stdout.write(markdownReport(report));

  const resultsDir = join(ROOT, 'bench/results');
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, `${machine.date.replace(/\.\d+Z$/, 'Z').replaceAll(':', '-')}.json`);
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  log(`bench: results written to ${relative(process.cwd(), file)}`);
}

main().then(
  () => process.exit(0),
  async (err: unknown) => {
    log(`bench failed: ${(err as Error).stack ?? String(err)}`);
    await stopAll();
    process.exit(1);
  },
);
