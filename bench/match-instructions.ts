/**
 * Instructions per RouteTable.match at 10 routes and at a large table (10,000 by default), the
 * same ten requests at both (bench/lib/scale-match.ts): what the table's size costs a request,
 * counted by callgrind, so the answer holds on a loaded machine where bench/scale.ts's time ratio
 * does not.
 *
 * Each size runs once under callgrind, which dumps its counts (and starts over) before every call
 * of getgid: after building the table and a warmup, the process calls getgid, matches
 * BENCH_MATCH_COUNT (200,000) times and calls getgid again; the last dump holds the matches. So
 * the count is of the matches alone, in one process (two processes differ by when V8 happened to
 * tier up, far more than a match costs).
 *
 *   node bench/match-instructions.ts [routes...]
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { callgrindTotal } from './lib/callgrind.ts';
import { intFromEnv } from './lib/env.ts';
import { matchWorkload } from './lib/scale-match.ts';
import { fmtNum } from './lib/table.ts';

const WARMUP = 300_000;

function perMatch(routes: number, matches: number, dir: string): number {
  const out = join(dir, `cg-${routes}.out`);
  const child = spawnSync(
    'valgrind',
    [
      '--tool=callgrind',
      '--smc-check=all-non-file',
      '--dump-before=getgid',
      `--callgrind-out-file=${out}`,
      process.execPath,
      // No concurrent compilation: V8 tiers up by counts alone, the same at every size. With
      // compilation on a helper thread (slowed down by callgrind like all else), which code ran
      // in the window depended on timing: Maglev code for collect at one size, TurboFan's at the other.
      '--single-threaded',
      import.meta.filename,
      'child',
      String(routes),
      String(matches),
    ],
    { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] },
  );
  if (child.status !== 0) throw new Error(`callgrind ${routes}: ${child.stderr}`);
  // Node calls getgid at start-up too: the matches are in the last numbered dump (the final one
  // at exit has no number).
  const dumps = readdirSync(dir)
    .filter((f) => f.startsWith(`cg-${routes}.out.`))
    .sort((x, y) => Number(x.split('.').pop()) - Number(y.split('.').pop()));
  if (dumps.length === 0) throw new Error(`callgrind ${routes}: no dump at getgid`);
  return callgrindTotal(readFileSync(join(dir, dumps.at(-1)!), 'utf8')) / matches;
}

function main(): void {
  const sizes = process.argv.slice(2).map(Number);
  const large = sizes.length > 0 ? sizes : [10_000];
  const count = intFromEnv('BENCH_MATCH_COUNT', 200_000);
  const dir = mkdtempSync(join(tmpdir(), 'match-cg-'));
  try {
    const ten = perMatch(10, count, dir);
    process.stdout.write(`10 routes: ${fmtNum(ten, 1)} instructions per match\n`);
    for (const routes of large) {
      const big = perMatch(routes, count, dir);
      process.stdout.write(
        `${routes} routes: ${fmtNum(big, 1)} instructions per match (${fmtNum(big / ten, 3)}× of 10)\n`,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  if (process.argv[2] === 'child') {
    const work = matchWorkload(Number(process.argv[3]), false);
    work.run(WARMUP);
    process.getgid?.();
    const found = work.run(Number(process.argv[4]));
    process.getgid?.();
    if (found === 0) throw new Error('unreachable');
  } else main();
}
