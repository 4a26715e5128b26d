/**
 * Latency at a fixed rate, compared fairly between gateways running at the same time
 * (bench/lib/ratelimit-latency.ts, bench/lib/mesh-latency.ts): each is loaded in turn at the same
 * rate by bench/lib/paced.ts in short slices (order reversed every other turn) until each had
 * `durationS` seconds. Whatever the machine does meanwhile is spread over all alike, where
 * back-to-back runs of a minute each drift apart; an idle gateway costs next to nothing while
 * another is loaded. The CPU of each contestant's processes is read around its own slices only.
 *
 * Each slice's own p50 and p99 are kept as well (`turns`): two contestants are compared turn by
 * turn (their slices of one turn are seconds apart) and the per-turn differences summarised by
 * their median (turnDifferences()), which a few disturbed turns do not move, where one p99 over
 * all answers is decided by the worst seconds of the run, whichever contestant they fell on.
 */
import { cpuMs, machineCpuWindow, waitForQuiet } from './cpu.ts';
import { intFromEnv } from './env.ts';
import { log } from './feature-bench.ts';
import { FOREIGN_PCT } from './measure.ts';
import { PacedLoad, pacedFailures } from './paced.ts';
import { quantile } from './probe.ts';
import { median } from './side-by-side-round.ts';

export interface PacedContestant<Id extends string = string> {
  id: Id;
  url: string;
  headers?: Readonly<Record<string, string>>;
  /** The processes charged for its requests (a gateway; both sidecars of a mesh hop). */
  pids: readonly number[];
}

/** One contestant's slice of one turn: p50 and p99 from sending, and from when each request was due. */
export interface TurnLatency {
  p50: number;
  p99: number;
  dueP50: number;
  dueP99: number;
}

export interface PacedTurnResult<Id extends string = string> {
  id: Id;
  /** One per answered request, ms from sending to the end of the body. */
  latenciesMs: number[];
  /** One per answered request, ms from when it was due (paced.ts) to the end of the body. */
  intendedLatenciesMs: number[];
  /** One per turn, in order; undefined for a slice without answers. */
  turns: (TurnLatency | undefined)[];
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
 * gateway, or `defaults.durationS`), `<prefix>_SLICE` (1 s) and `<prefix>_CONNECTIONS` (16).
 */
export function turnsFromEnv(
  prefix: string,
  defaults: { durationS?: number } = {},
): Pick<PacedTurnsOptions, 'rate' | 'durationS' | 'sliceS' | 'connections'> {
  return {
    rate: intFromEnv(`${prefix}_RATE`, 1000),
    durationS: intFromEnv(`${prefix}_DURATION`, defaults.durationS ?? 20),
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
    result: {
      id: c.id,
      latenciesMs: [],
      intendedLatenciesMs: [],
      turns: [],
      cpuMs: c.pids.map(() => 0),
      failed: 0,
    } as PacedTurnResult<Id>,
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
        l.result.intendedLatenciesMs.push(...r.intendedLatenciesMs);
        l.result.turns.push(turnLatency(r.latenciesMs, r.intendedLatenciesMs));
        l.result.failed += pacedFailures(r);
      }
    }
    return { results: loaded.map((l) => l.result), foreignPct: machine()?.foreignPct };
  } finally {
    for (const l of loaded) await l.load.close();
  }
}

function turnLatency(sent: readonly number[], due: readonly number[]): TurnLatency | undefined {
  if (sent.length === 0) return undefined;
  return {
    p50: quantile(sent, 0.5)!,
    p99: quantile(sent, 0.99)!,
    dueP50: quantile(due, 0.5)!,
    dueP99: quantile(due, 0.99)!,
  };
}

export interface TurnDifferences {
  /** Turns in which both contestants had answers. */
  turns: number;
  median: number;
  /** The 25th and 75th percentiles of the per-turn differences: how much they spread. */
  q1: number;
  q3: number;
  /** Turns whose difference was above `over` (when given). */
  above: number;
}

/**
 * `pick(a) - pick(b)` turn by turn, summarised: the median over the turns, the quartiles, and how
 * many turns were above `over`. undefined when no turn had answers from both.
 */
export function turnDifferences(
  a: readonly (TurnLatency | undefined)[],
  b: readonly (TurnLatency | undefined)[],
  pick: (t: TurnLatency) => number,
  over = Number.POSITIVE_INFINITY,
): TurnDifferences | undefined {
  const d: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (x !== undefined && y !== undefined) d.push(pick(x) - pick(y));
  }
  if (d.length === 0) return undefined;
  return {
    turns: d.length,
    median: median(d),
    q1: quantile(d, 0.25)!,
    q3: quantile(d, 0.75)!,
    above: d.filter((x) => x > over).length,
  };
}
