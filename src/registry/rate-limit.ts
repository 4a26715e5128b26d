/**
 * Registration requests per credential: a token bucket per principal (`perSecond` sustained,
 * `burst` at once). Synchronous and small on purpose: the registration API is not the data path,
 * and a few lines keep it free of promises per request. Buckets that have refilled completely are
 * forgotten, so identities that come and go do not grow the map.
 */

interface Bucket {
  tokens: number;
  at: number;
}

export class RateLimiter {
  readonly #perMs: number;
  readonly #burst: number;
  readonly #now: () => number;
  readonly #buckets = new Map<string, Bucket>();
  #lastPrune = 0;

  constructor(perSecond: number, burst: number, now: () => number = performance.now.bind(performance)) {
    this.#perMs = perSecond / 1000;
    this.#burst = burst;
    this.#now = now;
  }

  /** Take one token for `principal`: 0 when allowed, else the milliseconds until one is available. */
  take(principal: string): number {
    const now = this.#now();
    this.#prune(now);
    let bucket = this.#buckets.get(principal);
    if (bucket === undefined) {
      bucket = { tokens: this.#burst, at: now };
      this.#buckets.set(principal, bucket);
    } else {
      bucket.tokens = Math.min(this.#burst, bucket.tokens + (now - bucket.at) * this.#perMs);
      bucket.at = now;
    }
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.ceil((1 - bucket.tokens) / this.#perMs);
  }

  get size(): number {
    return this.#buckets.size;
  }

  /** At most once per full-refill period, drop the buckets that are full again. */
  #prune(now: number): void {
    const refill = this.#burst / this.#perMs;
    if (now - this.#lastPrune < refill) return;
    this.#lastPrune = now;
    for (const [principal, b] of this.#buckets)
      if (b.tokens + (now - b.at) * this.#perMs >= this.#burst) this.#buckets.delete(principal);
  }
}
