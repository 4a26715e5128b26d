/**
 * One round of two gateways measured side by side (bench/side-by-side.ts, bench/wide.ts): both
 * loaded at once, each by its own wrk, and the CPU time each spent per request over the same
 * seconds. Whatever slows the machine slows both, so their ratio holds where absolute numbers drift.
 */
import { cpuMs } from './cpu.ts';
import { type LoadResult, totalErrors } from './load.ts';
import type { Managed } from './proc.ts';
import { runWrk } from './wrk.ts';

export interface Loaded {
  proc: Managed;
  url: string;
}

export interface RoundResult {
  /** CPU µs per request of A and B. */
  usA: number;
  usB: number;
  a: LoadResult;
  b: LoadResult;
}

/** Warm both up for `warmupS`, then load both for `durationS` and read their CPU time. */
export async function sideBySideRound(
  wrk: string,
  ga: Loaded,
  gb: Loaded,
  opts: { warmupS: number; durationS: number; connections: number },
): Promise<RoundResult> {
  const load = (s: number) =>
    Promise.all(
      [ga, gb].map((g) => runWrk(wrk, g.url, { durationS: s, connections: opts.connections, threads: 1 })),
    );
  await load(opts.warmupS);
  const before = [cpuMs(ga.proc.pid), cpuMs(gb.proc.pid)];
  const [ra, rb] = await load(opts.durationS);
  const after = [cpuMs(ga.proc.pid), cpuMs(gb.proc.pid)];
  if (before.includes(undefined) || after.includes(undefined)) throw new Error('a gateway exited');
  for (const r of [ra!, rb!]) {
    if (totalErrors(r) > 0)
      throw new Error(`errors under load: ${JSON.stringify(r.errors)}, non-2xx ${r.non2xx3xx}`);
  }
  return {
    usA: ((after[0]! - before[0]!) * 1000) / ra!.requests,
    usB: ((after[1]! - before[1]!) * 1000) / rb!.requests,
    a: ra!,
    b: rb!,
  };
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
