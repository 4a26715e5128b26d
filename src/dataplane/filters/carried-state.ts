/**
 * State kept across reloads, by one rule for everything that keeps any (the JWT providers' key
 * sets and token caches, a policy's counters): an entry is named by a key and built from a config
 * whose fingerprint it keeps; the set compiled for the next snapshot takes the entry over when key
 * and fingerprint are the same, and builds a new one otherwise.
 *
 * Every set holds a reference on its entries and an entry closes when the last set holding it is
 * closed: the previous set can be closed after the swap, and a set whose snapshot failed to
 * compile can be closed, in either order, without closing what the other still uses.
 */

interface Held<T> {
  readonly value: T;
  readonly fingerprint: string;
  holders: number;
}

export class CarriedState<T extends { close(): void }> {
  readonly #entries = new Map<string, Held<T>>();
  /** Consulted while this set is being filled; dropped by `seal()`, so sets do not chain. */
  #previous: CarriedState<T> | undefined;
  #closed = false;

  constructor(previous?: CarriedState<T>) {
    this.#previous = previous !== undefined && !previous.#closed ? previous : undefined;
  }

  /**
   * The entry `key`: the one this set already holds, else the previous set's when its
   * fingerprint is `fingerprint`, else `build()`'s. Throws when this set holds `key` with another
   * fingerprint (two configs under one key is a caller's bug).
   */
  take(key: string, fingerprint: string, build: () => T): T {
    const mine = this.#entries.get(key);
    if (mine !== undefined) {
      if (mine.fingerprint !== fingerprint)
        throw new Error(`state ${key}: two configurations in one snapshot`);
      return mine.value;
    }
    const previous = this.#previous;
    const old = previous === undefined ? undefined : previous.#entries.get(key);
    const held =
      old !== undefined && old.holders > 0 && old.fingerprint === fingerprint
        ? old
        : { value: build(), fingerprint, holders: 0 };
    held.holders++;
    this.#entries.set(key, held);
    return held.value;
  }

  get(key: string): T | undefined {
    return this.#entries.get(key)?.value;
  }

  /** Keys in the order they were taken. */
  keys(): string[] {
    return [...this.#entries.keys()];
  }

  values(): T[] {
    return [...this.#entries.values()].map((h) => h.value);
  }

  /** This set is complete: the previous one is no longer consulted (nor kept alive by it). */
  seal(): void {
    this.#previous = undefined;
  }

  /** Release this set's entries; those no other set holds close. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#previous = undefined;
    for (const held of this.#entries.values()) {
      if (--held.holders === 0) held.value.close();
    }
  }
}
