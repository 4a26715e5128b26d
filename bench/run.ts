/**
 * `npm run bench`: one run on this machine comparing Peregrine with the bare minimum (an undici
 * forwarder), what Node users reach for (express + http-proxy-middleware), nginx, and the upstream
 * itself; and Peregrine with its features on and off (resilience layer off, JWT auth, TLS,
 * access log and tracing). Each target runs in its own process and is loaded by wrk from another; the whole
 * sequence runs twice, forward then reversed, and the mean per target is reported, with the ratios
 * Peregrine aims for. The report (markdown) goes to stdout, progress to stderr, and the raw results
 * to bench/results/<date>.json.
 *
 * Environment: BENCH_DURATION (s, default 10), BENCH_WARMUP (s, 3), BENCH_CONNECTIONS (50),
 * BENCH_THREADS (wrk threads, 1), BENCH_ROUNDS (2), BENCH_PIN (1: the target on a CPU of its own,
 * everything else on the others; bench/lib/pin.ts), BENCH_TARGETS (comma-separated ids, all; e.g.
 * `peregrine-passthrough,peregrine-lean` for one check; the order stays the canonical one),
 * BENCH_LOADGEN (wrk | autocannon), BENCH_QUIET_WAIT (s, 30: how long to wait before each target
 * for other processes to leave the CPU alone), BENCH_RETRIES (2: measured runs repeated when other
 * processes took more than 15% of a core), BENCH_PEREGRINE_DIR (measure the Peregrine in that
 * directory instead of a snapshot of this checkout's src/ taken at start), BENCH_KEEP_TMP=1 (keep
 * generated configs and logs).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { mintBenchJwt, selfSignedCert } from './lib/credentials.ts';
import { intFromEnv } from './lib/env.ts';
import { pickLoadGenerator } from './lib/loadgen.ts';
import { machineInfo } from './lib/machine.ts';
import { FOREIGN_PCT, measure } from './lib/measure.ts';
import { type PinPlan, pinPlan, pinSelf } from './lib/pin.ts';
import { findExecutable, installCleanup, stopAll, waitForHttp } from './lib/proc.ts';
import {
  checks,
  type Measurement,
  markdownReport,
  notesFor,
  type Settings,
  summarise,
} from './lib/report.ts';
import { snapshotPeregrine } from './lib/snapshot.ts';
import { fileStamp } from './lib/table.ts';
import { type BenchContext, peregrinePreflight, startPeer, TARGETS, type Target } from './lib/targets.ts';

const ROOT = join(import.meta.dirname, '..');
/** BENCH_PEREGRINE_DIR: measure the Peregrine in another checkout (e.g. a snapshot of a commit). */
const PEREGRINE_DIR = resolve(process.env.BENCH_PEREGRINE_DIR ?? ROOT);

const log = (s: string) => process.stderr.write(`${s}\n`);

function readSettings(pin: PinPlan | undefined): Settings {
  return {
    durationS: intFromEnv('BENCH_DURATION', 10),
    warmupS: intFromEnv('BENCH_WARMUP', 3, 0),
    connections: intFromEnv('BENCH_CONNECTIONS', 50),
    threads: intFromEnv('BENCH_THREADS', 1),
    rounds: intFromEnv('BENCH_ROUNDS', 2),
    quietWaitS: intFromEnv('BENCH_QUIET_WAIT', 30, 0),
    retries: intFromEnv('BENCH_RETRIES', 2, 0),
    pinned: pin ? { target: pin.target, rest: pin.rest } : undefined,
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

/** The self-signed certificate for peregrine-https, or why it could not be made. */
function benchTls(tmpDir: string): BenchContext['tls'] {
  const openssl = findExecutable('openssl', ['/usr/bin', '/usr/local/bin']);
  if (!openssl) return { error: 'openssl not installed' };
  try {
    return selfSignedCert(openssl, tmpDir);
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    return { error: `openssl failed: ${stderr || (err as Error).message}` };
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  installCleanup(log);
  const cores = availableParallelism();
  const pin = pinPlan(process.env, cores);
  // Before any child starts: they inherit this process's CPUs.
  if (pin) pinSelf(pin);
  const settings = readSettings(pin);
  const targets = selectTargets();
  const loadgen = pickLoadGenerator();
  const nginxPath = findExecutable('nginx', ['/usr/sbin', '/usr/local/sbin', '/usr/local/nginx/sbin']);
  const wrkPath = loadgen.tool === 'wrk' ? findExecutable('wrk', ['/usr/local/bin', '/usr/bin']) : undefined;
  const machine = machineInfo({ tool: loadgen.tool, path: wrkPath }, nginxPath, PEREGRINE_DIR, cores);
  const tmpDir = mkdtempSync(join(tmpdir(), 'peregrine-bench-'));
  // Also on Ctrl-C, which exits from the signal handler without reaching the finally below.
  const removeTmp = () => rmSync(tmpDir, { recursive: true, force: true });
  if (!process.env.BENCH_KEEP_TMP) process.on('exit', removeTmp);
  const measurements: Measurement[] = [];
  try {
    // Freeze the code under test (others may be editing src/ meanwhile), unless told where it is.
    const peregrineDir = process.env.BENCH_PEREGRINE_DIR ? PEREGRINE_DIR : snapshotPeregrine(ROOT, tmpDir);
    await peregrinePreflight(process.execPath, peregrineDir, tmpDir);
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
      pin,
      jwt: await mintBenchJwt(),
      tls: benchTls(tmpDir),
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
  const notes = notesFor(measurements, settings, FOREIGN_PCT);
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
  const file = join(resultsDir, `${fileStamp(machine.date)}.json`);
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
