/**
 * An open-loop load at a fixed rate: request k is sent at k / rate seconds after the start,
 * whether or not earlier ones have been answered, over at most `connections` keep-alive
 * connections, and each latency is timed in microseconds (wrk and autocannon are closed-loop, and
 * autocannon's histogram keeps whole milliseconds). Each answer is timed twice: from when it was
 * sent, and from when it was due (k / rate after the start, as wrk2 does; in bursts, its burst's
 * start): a late send (this process's event loop was busy) counts in the second, so no stall is
 * left out of it (coordinated omission). For comparing the latency two configurations add at one
 * and the same load, well below saturation. It runs in the bench process: the latency includes
 * this process's event loop, alike for every target.
 */
import { Pool } from 'undici';

export interface PacedOptions {
  /** Requests per second. */
  rate: number;
  durationS: number;
  /** The most connections (undici opens them as needed). */
  connections: number;
  headers?: Readonly<Record<string, string>>;
}

export interface PacedResult {
  sent: number;
  durationS: number;
  /** Requests per second actually sent. */
  rate: number;
  /** Milliseconds from sending to the end of the response body, one per answered request. */
  latenciesMs: number[];
  /** Milliseconds from when the request was due to the end of its body (`latenciesMs`'s order). */
  intendedLatenciesMs: number[];
  /** When each answered request was sent, ms from the run's start (`latenciesMs`'s order). */
  startsMs: number[];
  /** The run's start, epoch ms (to line `startsMs` up with other processes' clocks). */
  startedAtMs: number;
  /** Answers by status code. */
  statuses: Record<string, number>;
  /** Requests that got no answer (socket errors, timeouts). */
  errors: number;
}

/**
 * How many requests are due `elapsedMs` after the start at `rate` per second (the first at 0),
 * sent `burst` at a time (every `burst / rate` seconds; 1: evenly spaced).
 */
export function dueCount(elapsedMs: number, rate: number, burst = 1): number {
  if (elapsedMs < 0) return 0;
  return (Math.floor((elapsedMs * rate) / 1000 / burst) + 1) * burst;
}

/** Paced runs against one URL over one pool of keep-alive connections, kept between runs. */
export class PacedLoad {
  readonly #pool: Pool;
  readonly #path: string;

  constructor(url: string, connections: number) {
    const target = new URL(url);
    this.#path = `${target.pathname}${target.search}`;
    this.#pool = new Pool(target.origin, { connections, keepAliveTimeout: 30_000 });
  }

  /**
   * `burst` > 1 sends that many requests at once, `burst / rate` seconds apart: at a low average
   * rate, each gateway finds several requests ready per wakeup, as under saturation.
   */
  async run(
    rate: number,
    durationS: number,
    headers?: Readonly<Record<string, string>>,
    burst = 1,
  ): Promise<PacedResult> {
    const result: PacedResult = {
      sent: 0,
      durationS,
      rate: 0,
      latenciesMs: [],
      intendedLatenciesMs: [],
      startsMs: [],
      startedAtMs: Date.now(),
      statuses: {},
      errors: 0,
    };
    const pending = new Set<Promise<void>>();
    const t0 = performance.now();
    result.startedAtMs = Date.now();
    const send = (): void => {
      const start = performance.now();
      // Request k is due with its burst: the first of them, k - k % burst.
      const due = t0 + ((result.sent - (result.sent % burst)) * 1000) / rate;
      const p = this.#pool
        .request({ method: 'GET', path: this.#path, headers, headersTimeout: 10_000, bodyTimeout: 10_000 })
        .then(async (res) => {
          await res.body.dump();
          const end = performance.now();
          result.latenciesMs.push(end - start);
          result.intendedLatenciesMs.push(end - due);
          result.startsMs.push(start - t0);
          result.statuses[res.statusCode] = (result.statuses[res.statusCode] ?? 0) + 1;
        })
        .catch(() => {
          result.errors++;
        })
        .finally(() => pending.delete(p));
      pending.add(p);
      result.sent++;
    };
    const endMs = durationS * 1000;
    await new Promise<void>((done) => {
      const tick = (): void => {
        const elapsed = performance.now() - t0;
        // A late last tick (a busy event loop) still sends every request due before the end.
        const total = Math.ceil((endMs * rate) / 1000);
        const due = elapsed >= endMs ? total : Math.min(total, dueCount(elapsed, rate, burst));
        while (result.sent < due) send();
        if (elapsed >= endMs) {
          clearInterval(timer);
          done();
        }
      };
      const timer = setInterval(tick, 1);
      tick();
    });
    result.rate = result.sent / ((performance.now() - t0) / 1000);
    while (pending.size) await Promise.all([...pending]);
    return result;
  }

  close(): Promise<void> {
    return this.#pool.close();
  }
}

/** One paced run on connections of its own. */
export async function runPaced(url: string, opts: PacedOptions): Promise<PacedResult> {
  const load = new PacedLoad(url, opts.connections);
  try {
    return await load.run(opts.rate, opts.durationS, opts.headers);
  } finally {
    await load.close();
  }
}

/** Requests without a 2xx answer: other statuses, and no answer at all. */
export function pacedFailures(r: Pick<PacedResult, 'statuses' | 'errors'>): number {
  let n = r.errors;
  for (const [status, count] of Object.entries(r.statuses)) if (status[0] !== '2') n += count;
  return n;
}
