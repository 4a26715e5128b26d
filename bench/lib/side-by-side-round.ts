/**
 * One round of two gateways measured side by side (bench/side-by-side.ts, bench/wide.ts,
 * bench/mesh.ts): both loaded at once, each by its own wrk, and the CPU time each spent per request
 * over the same seconds. Whatever slows the machine slows both, so their ratio holds where absolute
 * numbers drift. A side may be more than one process (a mesh hop: two sidecars), each accounted.
 */
import { cpuMs } from './cpu.ts';
import { type LoadResult, totalErrors } from './load.ts';
import type { Managed } from './proc.ts';
import { runWrk } from './wrk.ts';

export interface Loaded {
  /** The process wrk loads. */
  proc: Managed;
  url: string;
  /** Headers wrk sends with every request (e.g. `Host`). */
  headers?: Readonly<Record<string, string>>;
  /** The processes whose CPU this side is charged, in order (default: `proc`). */
  cpuOf?: readonly Managed[];
}

export interface RoundResult {
  /** CPU µs per request of A and B (each side's processes summed). */
  usA: number;
  usB: number;
  /** CPU µs per request of each process of A and B, in `cpuOf` order. */
  perProcA: number[];
  perProcB: number[];
  a: LoadResult;
  b: LoadResult;
}

/** At most this many warmup loads while waiting for `warmupRequests`. */
const MAX_WARMUPS = 20;

/**
 * Run `load` (which answers the requests each side got) at least once, and again until every side
 * has had `minRequests` in all, at most `maxLoads` times. Returns the requests each side had.
 */
export async function warmUntil(
  load: () => Promise<number[]>,
  minRequests: number,
  maxLoads = MAX_WARMUPS,
): Promise<number[]> {
  let warmed: number[] = [];
  for (let i = 0; i < maxLoads; i++) {
    const got = await load();
    warmed = got.map((n, side) => (warmed[side] ?? 0) + n);
    if (Math.min(...warmed) >= minRequests) break;
  }
  return warmed;
}

/**
 * Warm both up for `warmupS`, again until each side has answered `warmupRequests` (if given) in
 * its warmups, call `afterWarmup` (e.g. to read counters), then load both for `durationS` and read
 * their CPU time.
 */
export async function sideBySideRound(
  wrk: string,
  ga: Loaded,
  gb: Loaded,
  opts: {
    warmupS: number;
    durationS: number;
    connections: number;
    /**
     * Requests each side must have answered before the measured seconds: V8 compiles a gateway's
     * hot code over its first tens of thousands of requests (docs/decisions.md, the mesh
     * benchmark's warmup), and a side that is slower per request gets fewer in the same seconds.
     */
    warmupRequests?: number;
    afterWarmup?: () => Promise<void>;
  },
): Promise<RoundResult> {
  const load = (s: number) =>
    Promise.all(
      [ga, gb].map((g) =>
        runWrk(wrk, g.url, { durationS: s, connections: opts.connections, threads: 1, headers: g.headers }),
      ),
    );
  const procsA = ga.cpuOf ?? [ga.proc];
  const procsB = gb.cpuOf ?? [gb.proc];
  const cpu = () => [...procsA, ...procsB].map((p) => cpuMs(p.pid));
  await warmUntil(async () => (await load(opts.warmupS)).map((r) => r.requests), opts.warmupRequests ?? 0);
  await opts.afterWarmup?.();
  const before = cpu();
  const [ra, rb] = await load(opts.durationS);
  const after = cpu();
  if (before.includes(undefined) || after.includes(undefined)) throw new Error('a gateway exited');
  for (const r of [ra!, rb!]) {
    if (totalErrors(r) > 0)
      throw new Error(`errors under load: ${JSON.stringify(r.errors)}, non-2xx ${r.non2xx3xx}`);
  }
  const us = (i: number, requests: number) => ((after[i]! - before[i]!) * 1000) / requests;
  const perProcA = procsA.map((_, i) => us(i, ra!.requests));
  const perProcB = procsB.map((_, i) => us(procsA.length + i, rb!.requests));
  const sum = (xs: number[]) => xs.reduce((s, x) => s + x, 0);
  return { usA: sum(perProcA), usB: sum(perProcB), perProcA, perProcB, a: ra!, b: rb! };
}

/**
 * The geometric mean of ratios: over rounds that alternate which side starts first, an even number
 * of them weighs both orders alike, where a median of four follows whichever two rounds sit in the
 * middle.
 */
export function geometricMean(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  let logs = 0;
  for (const x of xs) logs += Math.log(x);
  return Math.exp(logs / xs.length);
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
