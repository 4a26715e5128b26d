/**
 * What every load benchmark (bench/run.ts, bench/registry.ts, bench/ratelimit.ts) sets up before
 * measuring and tears down after: cleanup of child processes on any way out, CPU pinning
 * (BENCH_PIN), the settings from the environment, the load generator, the machine facts, a temp
 * dir, a frozen copy of the Peregrine under test (checked to load a config), the shared upstream
 * and OTLP sink, and the bench's own credentials.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { mintBenchJwt, selfSignedCert } from './credentials.ts';
import { intFromEnv } from './env.ts';
import { type LoadGenerator, pickLoadGenerator } from './loadgen.ts';
import { type MachineInfo, machineInfo } from './machine.ts';
import { type PinPlan, pinPlan, pinSelf } from './pin.ts';
import { findExecutable, installCleanup, stopAll, waitForHttp } from './proc.ts';
import type { Settings } from './report.ts';
import { snapshotPeregrine } from './snapshot.ts';
import { fileStamp } from './table.ts';
import { type BenchContext, peregrinePreflight, startPeer } from './targets.ts';

export const ROOT = join(import.meta.dirname, '../..');

export interface BenchSession {
  readonly ctx: BenchContext;
  readonly settings: Settings;
  readonly loadgen: LoadGenerator;
  readonly machine: MachineInfo;
  /** Logical CPUs, counted before the bench pinned itself. */
  readonly cores: number;
  /** Stop every child process and remove the temp dir (unless BENCH_KEEP_TMP). */
  close(): Promise<void>;
}

export function readSettings(pin: PinPlan | undefined): Settings {
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

/**
 * Everything up to the first measurement. `name` names the temp dir. BENCH_PEREGRINE_DIR measures
 * the Peregrine in that directory instead of a snapshot of this checkout's src/.
 */
export async function openSession(name: string, log: (s: string) => void): Promise<BenchSession> {
  installCleanup(log);
  const cores = availableParallelism();
  const pin = pinPlan(process.env, cores);
  // Before any child starts: they inherit this process's CPUs.
  if (pin) pinSelf(pin);
  const settings = readSettings(pin);
  const loadgen = pickLoadGenerator();
  const peregrineSource = resolve(process.env.BENCH_PEREGRINE_DIR ?? ROOT);
  const nginxPath = findExecutable('nginx', ['/usr/sbin', '/usr/local/sbin', '/usr/local/nginx/sbin']);
  const wrkPath = loadgen.tool === 'wrk' ? findExecutable('wrk', ['/usr/local/bin', '/usr/bin']) : undefined;
  const machine = machineInfo({ tool: loadgen.tool, path: wrkPath }, nginxPath, peregrineSource, cores);
  const tmpDir = mkdtempSync(join(tmpdir(), `peregrine-${name}-`));
  // Also on Ctrl-C, which exits from the signal handler without reaching close().
  const removeTmp = () => rmSync(tmpDir, { recursive: true, force: true });
  if (!process.env.BENCH_KEEP_TMP) process.on('exit', removeTmp);
  const close = async () => {
    await stopAll();
    if (process.env.BENCH_KEEP_TMP) log(`bench: generated files kept in ${tmpDir}`);
    else removeTmp();
  };
  try {
    // Freeze the code under test (others may be editing src/ meanwhile), unless told where it is.
    const peregrineDir = process.env.BENCH_PEREGRINE_DIR ? peregrineSource : snapshotPeregrine(ROOT, tmpDir);
    const node = process.execPath;
    await peregrinePreflight(node, peregrineDir, tmpDir);
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
    return { ctx, settings, loadgen, machine, cores, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Write `data` as bench/results/<prefix><date>.json; returns the path relative to the cwd. */
export function writeResults(prefix: string, date: string, data: unknown): string {
  const dir = join(ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${prefix}${fileStamp(date)}.json`);
  writeFileSync(file, `${JSON.stringify(data, null, 2)}\n`);
  return relative(process.cwd(), file);
}
