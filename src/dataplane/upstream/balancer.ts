import type { IncomingHttpHeaders } from 'node:http';
import type { Clock, Random } from './clock.ts';
import type { Endpoint } from './endpoint.ts';

/**
 * Per-request input a balancer may use. Every field is optional, so one long-lived object (the
 * request context itself) can be passed for every attempt without allocating.
 */
export interface PickContext {
  /** A key computed by the caller; consistent hashing uses it instead of its configured source. */
  readonly hashKey?: string | undefined;
  /** Request headers, for consistent hashing on a header or a cookie. */
  readonly headers?: IncomingHttpHeaders | undefined;
  /** The client's address, for consistent hashing on it. */
  readonly clientAddress?: string | undefined;
  /** Endpoints this request already tried: avoided while another candidate exists. */
  readonly tried?: readonly Endpoint[] | undefined;
}

/**
 * Chooses an endpoint for one attempt, among the endpoints last given to `update` (the cluster
 * gives only eligible ones: healthy and not ejected, or all of them in panic mode). Never returns
 * an endpoint in `ctx.tried` while another candidate exists; returns undefined only when it has no
 * endpoints. `update` is called when the candidate set changes (ejection, health, discovery) and
 * keeps the balancer's state for endpoints that stay. Implementations: weighted-round-robin.ts,
 * least-request.ts, peak-ewma.ts, consistent-hash.ts; tests/unit/upstream/balancer-conformance
 * runs them all against one suite.
 */
export interface Balancer {
  readonly kind: string;
  /** O(1), or O(log n) with unequal weights: never a scan of the set. */
  pick(ctx?: PickContext): Endpoint | undefined;
  /** The balancer may keep `endpoints`: the caller hands over an array it never changes again. */
  update(endpoints: readonly Endpoint[]): void;
}

export interface BalancerDeps {
  readonly now: Clock;
  readonly random: Random;
}

export function wasTried(tried: readonly Endpoint[] | undefined, endpoint: Endpoint): boolean {
  if (tried === undefined) return false;
  for (let i = 0; i < tried.length; i++) if (tried[i] === endpoint) return true;
  return false;
}

/**
 * `list` without the tried endpoints; `list` itself when nothing is excluded or everything would
 * be (retrying on a tried endpoint beats failing). Allocates only on retries.
 */
export function untried(
  list: readonly Endpoint[],
  tried: readonly Endpoint[] | undefined,
): readonly Endpoint[] {
  if (tried === undefined || tried.length === 0) return list;
  let excluded = 0;
  for (const e of list) if (wasTried(tried, e)) excluded++;
  if (excluded === 0 || excluded === list.length) return list;
  return list.filter((e) => !wasTried(tried, e));
}

/**
 * Picks an index with probability proportional to weight, by binary search over prefix sums; a
 * plain uniform index when all weights are equal.
 */
export class WeightedSampler {
  readonly #cumulative: Float64Array;
  readonly #total: number;
  readonly #uniform: boolean;

  constructor(list: readonly Endpoint[]) {
    this.#cumulative = new Float64Array(list.length);
    let total = 0;
    let uniform = true;
    for (let i = 0; i < list.length; i++) {
      total += list[i]!.weight;
      this.#cumulative[i] = total;
      if (list[i]!.weight !== list[0]!.weight) uniform = false;
    }
    this.#total = total;
    this.#uniform = uniform;
  }

  index(random: Random): number {
    const n = this.#cumulative.length;
    if (this.#uniform) return Math.floor(random() * n);
    const target = random() * this.#total;
    const cumulative = this.#cumulative;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cumulative[mid]! > target) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

/** Draws before a power-of-two-choices pick gives up on sampling around tried endpoints. */
const DRAWS = 8;

/**
 * A uniformly random endpoint of `list`, not tried while an untried one exists: sampled around
 * the tried ones, and only after DRAWS misses from a filtered copy.
 */
export function drawOne(
  list: readonly Endpoint[],
  random: Random,
  tried: readonly Endpoint[] | undefined,
): Endpoint | undefined {
  const n = list.length;
  if (tried === undefined || tried.length === 0) return list[Math.floor(random() * n)];
  for (let k = 0; k < DRAWS; k++) {
    const e = list[Math.floor(random() * n)]!;
    if (!wasTried(tried, e)) return e;
  }
  const rest = untried(list, tried);
  return rest[Math.floor(random() * rest.length)];
}

/**
 * The two candidates of a power-of-two-choices pick, drawn by weight, distinct, and not tried
 * while an untried endpoint exists. Written to `out` (a reused pair) so nothing is allocated;
 * with tried endpoints it samples around them and only after DRAWS misses falls back to a
 * filtered copy. `list` has two or more entries.
 */
export function drawTwo(
  list: readonly Endpoint[],
  sampler: WeightedSampler,
  random: Random,
  tried: readonly Endpoint[] | undefined,
  out: Endpoint[],
): void {
  const excluding = tried !== undefined && tried.length > 0;
  let a = list[sampler.index(random)]!;
  if (excluding && wasTried(tried, a)) {
    let k = 0;
    while (k < DRAWS && wasTried(tried, a)) {
      a = list[sampler.index(random)]!;
      k++;
    }
    if (wasTried(tried, a)) {
      const rest = untried(list, tried);
      if (rest === list) drawTwo(list, sampler, random, undefined, out);
      else if (rest.length === 1) {
        out[0] = rest[0]!;
        out[1] = rest[0]!;
      } else drawTwo(rest, new WeightedSampler(rest), random, undefined, out);
      return;
    }
  }
  let b = a;
  for (let k = 0; k < DRAWS && (b === a || (excluding && wasTried(tried, b))); k++)
    b = list[sampler.index(random)]!;
  if (b === a || (excluding && wasTried(tried, b))) {
    // Unlucky or heavily skewed weights: scan from a random start for a distinct, untried one.
    const n = list.length;
    const start = Math.floor(random() * n);
    b = a;
    for (let k = 0; k < n; k++) {
      const c = list[(start + k) % n]!;
      if (c !== a && !(excluding && wasTried(tried, c))) {
        b = c;
        break;
      }
    }
  }
  out[0] = a;
  out[1] = b;
}
