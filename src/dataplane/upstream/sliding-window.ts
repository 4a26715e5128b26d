/**
 * A count over the last `windowMs`, kept in a ring of buckets so that adding is O(1) and old
 * counts fall out as time passes. Resolution is one bucket (window / buckets).
 */
export class SlidingWindowCounter {
  readonly windowMs: number;
  readonly #bucketMs: number;
  readonly #counts: Float64Array;
  /** Start time of the bucket at #index. */
  #bucketStart: number;
  #index = 0;
  #sum = 0;

  constructor(windowMs: number, now: number, buckets = 10) {
    this.windowMs = windowMs;
    this.#bucketMs = Math.max(1, windowMs / buckets);
    this.#counts = new Float64Array(buckets);
    this.#bucketStart = now;
  }

  add(now: number, n = 1): void {
    this.#advance(now);
    this.#counts[this.#index]! += n;
    this.#sum += n;
  }

  /** The count over the window ending now. */
  sum(now: number): number {
    this.#advance(now);
    return this.#sum;
  }

  reset(now: number): void {
    this.#counts.fill(0);
    this.#sum = 0;
    this.#index = 0;
    this.#bucketStart = now;
  }

  #advance(now: number): void {
    const elapsed = now - this.#bucketStart;
    if (elapsed < this.#bucketMs) return;
    const steps = Math.floor(elapsed / this.#bucketMs);
    const counts = this.#counts;
    if (steps >= counts.length) {
      counts.fill(0);
      this.#sum = 0;
      this.#index = 0;
      this.#bucketStart = now;
      return;
    }
    for (let s = 0; s < steps; s++) {
      this.#index = (this.#index + 1) % counts.length;
      this.#sum -= counts[this.#index]!;
      counts[this.#index] = 0;
    }
    this.#bucketStart += steps * this.#bucketMs;
  }
}
