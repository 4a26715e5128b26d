/**
 * Latency at a fixed rate, compared fairly between gateways running at the same time
 * (bench/lib/ratelimit-latency.ts, bench/lib/mesh-latency.ts): each is loaded in turn at the same
 * rate by bench/lib/paced.ts in short slices (order reversed every other turn) until each had
 * `durationS` seconds. Whatever the machine does meanwhile is spread over all alike, where
 * back-to-back runs of a minute each drift apart; an idle gateway costs next to nothing while
 * another is loaded. The CPU of each contestant's processes is read around its own slices only.
 */
import { cpuMs, machineCpuWindow, waitForQuiet } from './cpu.ts';
import { intFromEnv } from './env.ts';
import { log } from './feature-bench.ts';
import { FOREIGN_PCT } from './measure.ts';
import { PacedLoad, pacedFailures } from './paced.ts';

export interface PacedContestant<Id extends string = string> {
  id: Id;
  url: string;
  headers?: Readonly<Record<string, string>>;
  /** The processes charged for its requests (a gateway; both sidecars of a mesh hop). */
  pids: readonly number[];
}

export interface PacedTurnResult<Id extends string = string> {
  id: Id;
  /** One per answered request, ms from sending to the end of the body. */
  latenciesMs: number[];
  /** CPU ms of each of `pids` over the contestant's slices. */
  cpuMs: number[];
  /** Answers other than 2xx, and requests without an answer. */
  failed: number;
}

export interface PacedTurnsOptions {
  rate: number;
  durationS: number;
  sliceS: number;
  /** Seconds of load for each before the turns (not counted). */
  warmupS: number;
  /**
   * Before that, this many requests to each, sent 16 at a time at `rate` (not counted): V8 compiles
   * a gateway's hot code over its first tens of thousands of requests, which `warmupS` at a low
   * rate does not cover (docs/decisions.md, the mesh benchmark's warmup).
   */
  warmup?: { requests: number; rate: number };
  /** Most connections per contestant. */
  connections: number;
  /** Waiting for other processes to leave the CPU alone, at most this long. */
  quietWaitS: number;
  /** The bench's own long-lived processes besides the contestants' (upstream, sink). */
  shared: readonly number[];
}

/**
 * The turns' settings from `<prefix>_RATE` (1,000 req/s), `<prefix>_DURATION` (20 s for each
 * gateway), `<prefix>_SLICE` (1 s) and `<prefix>_CONNECTIONS` (16).
 */
export function turnsFromEnv(
  prefix: string,
): Pick<PacedTurnsOptions, 'rate' | 'durationS' | 'sliceS' | 'connections'> {
  return {
    rate: intFromEnv(`${prefix}_RATE`, 1000),
    durationS: intFromEnv(`${prefix}_DURATION`, 20),
    sliceS: intFromEnv(`${prefix}_SLICE`, 1),
    connections: intFromEnv(`${prefix}_CONNECTIONS`, 16),
  };
}

/** Requests sent at once in the request-count warmup: each gateway finds several ready per wakeup. */
const WARMUP_BURST = 16;

/** Slice k's order: forward on even turns, reversed on odd ones, so no contestant always follows another. */
export function sliceOrder<T>(items: readonly T[], turn: number): T[] {
  return turn % 2 === 0 ? [...items] : [...items].reverse();
}

export async function pacedTurns<Id extends string>(
  contestants: readonly PacedContestant<Id>[],
  o: PacedTurnsOptions,
): Promise<{ results: PacedTurnResult<Id>[]; foreignPct: number | undefined }> {
  const loaded = contestants.map((c) => ({
    c,
    load: new PacedLoad(c.url, o.connections),
    result: { id: c.id, latenciesMs: [], cpuMs: c.pids.map(() => 0), failed: 0 } as PacedTurnResult<Id>,
  }));
  try {
    for (const l of loaded) {
      if (o.warmup)
        await l.load.run(o.warmup.rate, o.warmup.requests / o.warmup.rate, l.c.headers, WARMUP_BURST);
      if (o.warmupS > 0) await l.load.run(o.rate, o.warmupS, l.c.headers);
    }
    const pids = () => [...o.shared, ...contestants.flatMap((c) => c.pids)];
    await waitForQuiet(pids, FOREIGN_PCT, o.quietWaitS * 1000);
    log(`latency: ${loaded.length} gateways × ${o.durationS} s at ${o.rate} req/s in ${o.sliceS} s slices`);
    const machine = machineCpuWindow(pids);
    for (let turn = 0; turn < Math.ceil(o.durationS / o.sliceS); turn++) {
      for (const l of sliceOrder(loaded, turn)) {
        const before = l.c.pids.map(cpuMs);
        const r = await l.load.run(o.rate, o.sliceS, l.c.headers);
        const after = l.c.pids.map(cpuMs);
        if (before.includes(undefined) || after.includes(undefined)) throw new Error(`${l.c.id} exited`);
        l.c.pids.forEach((_, i) => {
          l.result.cpuMs[i]! += after[i]! - before[i]!;
        });
        l.result.latenciesMs.push(...r.latenciesMs);
        l.result.failed += pacedFailures(r);
      }
    }
    return { results: loaded.map((l) => l.result), foreignPct: machine()?.foreignPct };
  } finally {
    for (const l of loaded) await l.load.close();
  }
}
