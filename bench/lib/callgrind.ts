/**
 * Reading valgrind's callgrind output for bench/instructions.ts: the instruction count (Ir) of a
 * dump, and the self cost of its functions split into coarse categories (V8's optimising
 * compilers, the garbage collector) from `callgrind_annotate` output.
 */

export type CostCategory = 'compiler' | 'gc';

/** Self cost of one function, as `callgrind_annotate` prints it. */
export interface FunctionCost {
  /** The symbol as printed (return type, template and parameter lists included; no file or object). */
  symbol: string;
  ir: number;
}

export interface CategoryCosts {
  /** Sum over all functions listed (equals the program total when annotate ran with --threshold=100). */
  total: number;
  compiler: number;
  gc: number;
  /**
   * The part of `gc` in the young generation's collector (the Scavenger): what allocation costs.
   * The rest is mostly major GC (marking, sweeping), which costs by the size of the live heap.
   */
  scavenge: number;
}

/**
 * Instructions (the Ir event) of a callgrind dump: the `totals:` line (the sum of all costs in
 * the file), else the `summary:` line (what callgrind counted in the part). Throws when neither is
 * there, e.g. when the dump is still being written.
 */
export function callgrindTotal(text: string): number {
  const events = /^events:\s*(.+)$/m.exec(text)?.[1]?.trim().split(/\s+/) ?? ['Ir'];
  const column = Math.max(events.indexOf('Ir'), 0);
  for (const key of ['totals', 'summary']) {
    const line = new RegExp(`^${key}:\\s*(.+)$`, 'm').exec(text)?.[1];
    const value = Number(line?.trim().split(/\s+/)[column]);
    if (line !== undefined && Number.isFinite(value)) return value;
  }
  throw new Error('no totals: or summary: line in the callgrind file (incomplete dump?)');
}

const ANNOTATE_LINE = /^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.+)$/;

/**
 * Function lines of `callgrind_annotate --auto=no` output: `1,234 ( 0.5%)  file:symbol [object]`.
 * The program-totals line is left out.
 */
export function parseAnnotate(text: string): FunctionCost[] {
  const out: FunctionCost[] = [];
  for (const line of text.split('\n')) {
    const m = ANNOTATE_LINE.exec(line);
    if (!m || m[2]!.endsWith('PROGRAM TOTALS')) continue;
    // `file:symbol [object]`: file names hold no ':', symbols hold '::'.
    const located = m[2]!.replace(/ \[[^\]]*\]$/, '');
    const colon = located.indexOf(':');
    out.push({
      symbol: colon === -1 ? located : located.slice(colon + 1),
      ir: Number(m[1]!.replaceAll(',', '')),
    });
  }
  return out;
}

/** One function of `callgrind_annotate --show=<events>` output: its self costs, in the order shown. */
export interface FunctionCosts {
  symbol: string;
  /** The object file (`[/usr/lib/…/libc.so.6]`); `???` for code without one (V8's JIT code). */
  object: string;
  costs: number[];
}

/**
 * Function lines of `callgrind_annotate --auto=no --show=A,B,…` output, `columns` events shown:
 * `1,234 ( 0.5%) 56 ( 0.1%)  .  file:symbol [object]`, where `.` is a zero. The program-totals
 * line is left out.
 */
export function parseAnnotateColumns(text: string, columns: number): FunctionCosts[] {
  const line = new RegExp(`^\\s*((?:(?:[\\d,]+ \\(\\s*[\\d.]+%\\)|\\.|0)\\s+){${columns}})(\\S.*)$`);
  const out: FunctionCosts[] = [];
  for (const row of text.split('\n')) {
    const m = line.exec(row);
    if (!m || m[2]!.endsWith('PROGRAM TOTALS')) continue;
    const costs = m[1]!
      .replace(/\(\s*[\d.]+%\)/g, '')
      .trim()
      .split(/\s+/)
      .map((v) => (v === '.' ? 0 : Number(v.replaceAll(',', ''))));
    const object = / \[([^\]]*)\]$/.exec(m[2]!)?.[1] ?? '???';
    const located = m[2]!.replace(/ \[[^\]]*\]$/, '');
    out.push({ symbol: located.slice(located.indexOf(':') + 1), object, costs });
  }
  return out;
}

const OPEN = new Set(['<', '(', '{', '[']);
const CLOSE = new Set(['>', ')', '}', ']']);

/**
 * The qualified name of a C++ symbol without its return type and parameter list (template
 * arguments kept): `void v8::internal::Foo<Bar>::baz(v8::internal::HeapObject) const` gives
 * `v8::internal::Foo<Bar>::baz`. So a parameter of type HeapObject does not make a function GC.
 * A heuristic: names it cannot take apart (`operator<<`) come back whole.
 */
export function qualifiedName(symbol: string): string {
  const s = symbol.replace(/'\d+$/, '');
  let depth = 0;
  let nameStart = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (depth === 0 && c === ' ') nameStart = i + 1;
    if (depth === 0 && c === '(') {
      const end = matching(s, i);
      // `(anonymous namespace)::` is part of the name; the first other group is the parameter list.
      if (end !== -1 && !s.startsWith('::', end + 1)) return s.slice(nameStart, i);
    }
    if (OPEN.has(c)) depth++;
    else if (CLOSE.has(c) && depth > 0) depth--;
  }
  return s;
}

function matching(s: string, open: number): number {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    if (OPEN.has(s[i]!)) depth++;
    else if (CLOSE.has(s[i]!) && --depth === 0) return i;
  }
  return -1;
}

const COMPILER = [/v8::internal::compiler::/, /maglev/i, /turboshaft/i];
// IterateObjectCache: the GC's visit of the startup object cache, a root of every collection
// (several k a request in runs with many scavenges in the window, counted as request code before).
const GC = [
  /Heap/,
  /Scaveng/,
  /MarkCompact/,
  /heap::/,
  /Sweeper/,
  /Marking/,
  /Evacuat/,
  /GCTracer/,
  /IterateObjectCache/,
];
const SCAVENGER = /Scaveng/;

/** Which category a symbol's self cost counts to: V8's optimising compilers, the GC, or none. */
export function categorise(symbol: string): CostCategory | undefined {
  const name = qualifiedName(symbol);
  // Compiler first: its JSHeapBroker and HeapObjectRef are not the heap.
  if (COMPILER.some((re) => re.test(name))) return 'compiler';
  if (GC.some((re) => re.test(name))) return 'gc';
  return undefined;
}

/** Sum the self costs of `callgrind_annotate --threshold=100 --auto=no` output by category. */
export function costByCategory(annotateOutput: string): CategoryCosts {
  const out: CategoryCosts = { total: 0, compiler: 0, gc: 0, scavenge: 0 };
  for (const f of parseAnnotate(annotateOutput)) {
    out.total += f.ir;
    const category = categorise(f.symbol);
    if (category) out[category] += f.ir;
    if (category === 'gc' && SCAVENGER.test(qualifiedName(f.symbol))) out.scavenge += f.ir;
  }
  return out;
}
