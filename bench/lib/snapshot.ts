/**
 * A frozen copy of the Peregrine under test. Other people may edit src/ while a bench runs (a
 * file half-renamed breaks start-up, a change alters the numbers between rounds), so the bench
 * copies src/, bin/ and package.json once at the start and runs every Peregrine from that copy;
 * node_modules is linked, not copied.
 */
import { cpSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';

/** Copy `<root>/src`, `<root>/bin` and `<root>/package.json` into `<dir>/peregrine`; returns that directory. */
export function snapshotPeregrine(root: string, dir: string): string {
  const snap = join(dir, 'peregrine');
  mkdirSync(snap, { recursive: true });
  cpSync(join(root, 'src'), join(snap, 'src'), { recursive: true });
  cpSync(join(root, 'bin'), join(snap, 'bin'), { recursive: true });
  cpSync(join(root, 'package.json'), join(snap, 'package.json'));
  symlinkSync(join(root, 'node_modules'), join(snap, 'node_modules'), 'dir');
  return snap;
}
