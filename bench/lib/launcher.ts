/**
 * The bench starts Peregrine as it ships: through `bin/peregrine.js`, with the environment
 * variables and Node flags of that file's `#!/usr/bin/env -S [VAR=value …] node [flag …]` line, but
 * with the bench's own Node binary (so the child process runs the Node the bench was started with,
 * whatever PATH says).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const SHEBANG = /^#!\/usr\/bin\/env -S((?: +[A-Z_][A-Z0-9_]*=\S+)*) +node((?: +--?[\w-]+(?:=\S+)?)*) *$/;

function parse(firstLine: string): { env: string; flags: string } {
  const m = SHEBANG.exec(firstLine);
  if (!m) throw new Error(`unexpected #! line in bin/peregrine.js: ${firstLine}`);
  return { env: m[1]!, flags: m[2]! };
}

/** The Node flags on a launcher's `#!` line. */
export function launcherFlags(firstLine: string): string[] {
  return parse(firstLine).flags.split(' ').filter(Boolean);
}

/** The environment variables a launcher's `#!` line sets (`env -S VAR=value … node`). */
export function launcherEnv(firstLine: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of parse(firstLine).env.split(' ').filter(Boolean)) {
    const eq = pair.indexOf('=');
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

function firstLineOf(dir: string): string {
  return readFileSync(join(dir, 'bin/peregrine.js'), 'utf8').split('\n', 1)[0] ?? '';
}

/** Arguments for `node` that run the Peregrine in `dir` (before `run …` / `validate …`). */
export function peregrineArgv(dir: string): string[] {
  return [...launcherFlags(firstLineOf(dir)), join(dir, 'bin/peregrine.js')];
}

/**
 * The launcher's GC flags (semi-space cap, heap growing) alone: what a bench peer that stands for
 * a floor of Peregrine runs with, so the GC settings are not the difference.
 */
export function launcherGcFlags(dir: string): string[] {
  return peregrineArgv(dir).filter((a) => /^--(?:(?:max|min)-semi-space-size|heap-growing-percent)=/.test(a));
}

/** The environment the Peregrine in `dir` runs with: `base` plus what its launcher sets. */
export function peregrineEnv(dir: string, base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...base, ...launcherEnv(firstLineOf(dir)) };
}
