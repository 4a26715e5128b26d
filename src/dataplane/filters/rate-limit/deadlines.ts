/**
 * The deadlines of calls that all wait the same time (a Redis policy's store calls), watched by
 * one timer instead of a timer per call. Deadlines fall due in the order the calls were made, so
 * only the oldest unsettled call needs a timer: a call that settles in time costs an array slot,
 * where a timer of its own cost a Timeout, a timer list and two priority-queue updates per request
 * (the list empties with every call at a low rate), and kept a closure over the call alive.
 */

export interface Deadlined {
  /** performance.now() after which expire() is called, unless settled by then. */
  readonly deadline: number;
  readonly settled: boolean;
  /** The deadline passed unsettled. */
  expire(): void;
}

/** Slots of settled calls kept at the front before the array is compacted. */
const COMPACT_AFTER = 256;

export class DeadlineQueue<T extends Deadlined> {
  #items: (T | undefined)[] = [];
  #head = 0;
  #timer: NodeJS.Timeout | undefined;

  /** Watch `item`; its deadline must not be earlier than any watched before. */
  add(item: T, waitMs: number): void {
    this.#items.push(item);
    if (this.#timer === undefined) this.#arm(waitMs);
  }

  /** Let go of settled calls at the front (after settling one), so they die young. */
  release(): void {
    const items = this.#items;
    while (this.#head < items.length && items[this.#head]!.settled) items[this.#head++] = undefined;
    if (this.#head === items.length) {
      items.length = 0;
      this.#head = 0;
    }
  }

  /** Calls watched and not yet released (for tests). */
  get size(): number {
    return this.#items.length - this.#head;
  }

  /** Stop watching: nothing is expired any more. */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#items = [];
    this.#head = 0;
  }

  #arm(ms: number): void {
    // Whole milliseconds: Node keeps a timer list per distinct duration.
    this.#timer = setTimeout(this.#sweep, Math.max(1, Math.ceil(ms)));
    // A pending call is no reason to stay alive; its socket is.
    this.#timer.unref();
  }

  #sweep = (): void => {
    this.#timer = undefined;
    const now = performance.now();
    const items = this.#items;
    while (this.#head < items.length) {
      const item = items[this.#head]!;
      if (!item.settled) {
        if (item.deadline > now) break;
        item.expire();
      }
      items[this.#head++] = undefined;
    }
    if (this.#head === items.length) {
      items.length = 0;
      this.#head = 0;
      return;
    }
    if (this.#head >= COMPACT_AFTER) {
      items.splice(0, this.#head);
      this.#head = 0;
    }
    this.#arm(items[this.#head]!.deadline - now);
  };
}
