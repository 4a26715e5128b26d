/**
 * The bench starts Peregrine as it ships: through `bin/peregrine.js`, with the Node flags of that
 * file's `#!/usr/bin/env -S node …` line, but with the bench's own Node binary (so the child
 * process runs the Node the bench was started with, whatever PATH says).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const SHEBANG = /^#!\/usr\/bin\/env -S node((?: +--?[\w-]+(?:=\S+)?)*) *$/;

/** The Node flags on a launcher's `#!` line. */
export function launcherFlags(firstLine: string): string[] {
  const m = SHEBANG.exec(firstLine);
  if (!m) throw new Error(`unexpected #! line in bin/peregrine.js: ${firstLine}`);
  return m[1]!.split(' ').filter(Boolean);
}

/** Arguments for `node` that run the Peregrine in `dir` (before `run …` / `validate …`). */
export function peregrineArgv(dir: string): string[] {
  const bin = join(dir, 'bin/peregrine.js');
  const firstLine = readFileSync(bin, 'utf8').split('\n', 1)[0] ?? '';
  return [...launcherFlags(firstLine), bin];
}
