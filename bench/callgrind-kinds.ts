/**
 * A callgrind dump by kind of code (bench/lib/perf-categories.ts: OpenSSL, Node's TLSWrap and BIO,
 * libc malloc, V8's GC and compilers, JIT code, …): instructions and, when the dump was made with
 * `--cache-sim=yes` (BENCH_CG_CACHE_SIM=1 in bench/instructions.ts), first-level instruction cache
 * misses (I1mr) and data cache misses (D1mr reads, D1mw writes) and last-level ones (DLmr, DLmw), per unit of work. With a second dump
 * of the same program doing less work, the difference per unit: what a round trip costs, start-up
 * and handshakes left out.
 *
 *   node bench/callgrind-kinds.ts bench/results/…-sidecar-outbound.callgrind.out 5000
 *   node bench/callgrind-kinds.ts big.out 5000 small.out 1000
 */
import { execFileSync } from 'node:child_process';
import { basename } from 'node:path';
import { parseAnnotateColumns } from './lib/callgrind.ts';
import { codeCategory } from './lib/perf-categories.ts';
import { fmtNum, markdownTable } from './lib/table.ts';

const EVENTS = ['Ir', 'I1mr', 'D1mr', 'D1mw', 'DLmr', 'DLmw'] as const;
type Costs = Map<string, number[]>;

/** Self cost of every function of `file`, summed by kind of code. */
function costsByKind(file: string): Costs {
  const text = execFileSync(
    'callgrind_annotate',
    ['--auto=no', '--threshold=100', `--show=${EVENTS.join(',')}`, file],
    { encoding: 'utf8', maxBuffer: 512 * 1024 * 1024 },
  );
  if (!/^Events shown:\s+Ir I1mr D1mr/m.test(text))
    throw new Error(`${file}: no cache events (run with --cache-sim=yes)`);
  const out: Costs = new Map();
  for (const { symbol, object, costs } of parseAnnotateColumns(text, EVENTS.length)) {
    const kind = codeCategory(object === '???' ? 'JIT' : basename(object), symbol);
    const sum = out.get(kind) ?? EVENTS.map(() => 0);
    costs.forEach((v, i) => {
      sum[i]! += v;
    });
    out.set(kind, sum);
  }
  return out;
}

const [file, units, baseFile, baseUnits] = process.argv.slice(2);
const n = Number(units) - Number(baseUnits ?? 0);
if (file === undefined || !(n > 0)) {
  process.stderr.write('usage: node bench/callgrind-kinds.ts <dump> <units> [<smaller dump> <its units>]\n');
  process.exit(2);
}
const costs = costsByKind(file);
const base = baseFile === undefined ? new Map() : costsByKind(baseFile);
const rows = [...costs]
  .map(([kind, v]) => [kind, v.map((x, i) => (x - (base.get(kind)?.[i] ?? 0)) / n)] as const)
  .sort((a, b) => b[1][0]! - a[1][0]!);
const total = rows.reduce(
  (t, [, v]) => t.map((x, i) => x + v[i]!),
  EVENTS.map(() => 0),
);
console.log(
  markdownTable(
    [
      'kind of code (per unit)',
      'Ir',
      'I1 misses',
      'D1 read misses',
      'D1 write misses',
      'LL read misses',
      'LL write misses',
    ],
    [...rows, ['total', total] as const].map(([kind, v]) => [
      kind,
      `${fmtNum(v[0]! / 1000, 1)}k`,
      ...v.slice(1).map((x) => fmtNum(x, 1)),
    ]),
  ),
);
