/** Machine facts printed with every result: results without them cannot be read. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus, release, totalmem } from 'node:os';

export interface MachineInfo {
  cpuModel: string;
  /** Logical CPUs the bench may use (availableParallelism). */
  cores: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  loadGenerator: string;
  nginx: string | undefined;
  /**
   * The Peregrine measured: the checkout it came from, its commit, and whether src/ had
   * uncommitted changes (the bench runs a copy of src/ taken when it started).
   */
  peregrine: { dir: string; commit: string | undefined; srcDirty: boolean | undefined };
  date: string;
}

function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) return m[1]!.trim();
  } catch {
    // not Linux
  }
  return cpus()[0]?.model ?? 'unknown';
}

/** First line a command prints (stdout or stderr), whatever its exit code. */
function versionLine(cmd: string, args: string[]): string | undefined {
  try {
    const out = execFileSync(cmd, args, {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 5000,
    });
    return out.split('\n')[0]?.trim() || undefined;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return `${e.stdout ?? ''}${e.stderr ?? ''}`.split('\n')[0]?.trim() || undefined;
  }
}

/** Read-only git queries: the commit, and whether src/ differs from it. */
function peregrineRevision(root: string): MachineInfo['peregrine'] {
  const git = (args: string[]) =>
    execFileSync('git', args, {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 5000,
    });
  let commit: string | undefined;
  let srcDirty: boolean | undefined;
  try {
    commit = git(['rev-parse', '--short', 'HEAD']).trim();
    try {
      git(['diff', '--quiet', 'HEAD', '--', 'src']);
      srcDirty = false;
    } catch {
      srcDirty = true;
    }
  } catch {
    // not a git checkout
  }
  return { dir: root, commit, srcDirty };
}

export function machineInfo(
  loadGen: { tool: string; path?: string },
  nginxPath: string | undefined,
  root: string,
  /** Logical CPUs, counted before the bench pinned itself (BENCH_PIN) to fewer. */
  cores: number = availableParallelism(),
): MachineInfo {
  let loadGenerator = loadGen.tool;
  if (loadGen.tool === 'wrk' && loadGen.path) {
    // `wrk -v` prints "wrk debian/4.1.0-3 [epoll] Copyright ..." and exits 1.
    const v = versionLine(loadGen.path, ['-v']);
    const m = v && /^wrk (\S+)/.exec(v);
    if (m) loadGenerator = `wrk ${m[1]}`;
  }
  const nginxV = nginxPath ? versionLine(nginxPath, ['-v']) : undefined;
  return {
    cpuModel: cpuModel(),
    cores,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${process.platform} ${release()}`,
    node: process.version,
    loadGenerator,
    nginx: nginxV?.replace(/^nginx version:\s*/, ''),
    peregrine: peregrineRevision(root),
    date: new Date().toISOString(),
  };
}
