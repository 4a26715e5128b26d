/**
 * Finds the routes that can possibly match a path without looking at the others.
 *
 * Every route has an anchor: literal text that the request path, cut at a segment boundary (a
 * `/` or the end), must equal. `/users` for prefix `/users`, prefix `/users/`, template
 * `/users/:id` and template `/users/*`; the whole path for an exact path; `''` (any path) for
 * prefix `/` and for templates that start with a param or `*`. The index groups routes by anchor,
 * in precedence order, and keys the groups by a hash of the anchor. For a request, one pass over
 * the path hashes every prefix that ends at a segment boundary (`/users/1` → `/users`,
 * `/users/1`) and looks each up: a few probes of a small-integer hash table, whatever the number
 * of routes. A group found is then confirmed by comparing its anchor with the path once, so a hash
 * collision costs a comparison and never a wrong match. The table also knows which prefixes some
 * longer anchor continues (`/api` and `/api/v1` for `/api/v1/users`), so the pass stops at the
 * first prefix that none does: how far it goes depends on the request and the anchors under its
 * path, not on the longest anchor anywhere in the table.
 *
 * The layout is chosen for large tables, whose groups no longer fit in the CPU's first-level
 * cache (docs/scale.md, route matching): the hash table is one Int32Array of (key, list id)
 * pairs, so a probe reads one cache line where a Map reads a bucket, an entry and the group
 * object; and a request's candidate lists are returned as ids into the table's ListStore, numbers
 * written to an Int32Array, where storing the lists themselves into an array would run V8's write
 * barrier, which reads the header of each list's memory page (all of them in one cache set).
 *
 * A route in a collected list is therefore known to have its anchor equal to `path.slice(0,
 * anchor.length)`, with `path` ending or continuing with `/` right after it.
 */

export interface Anchored {
  readonly anchor: string;
}

/**
 * The candidate lists of one route table, shared by its path indexes: every group of routes that
 * share an anchor in one index, and each index's routes that match any path, numbered in one
 * sequence. PathIndex.collect returns these numbers.
 */
export class ListStore<R> {
  /** Routes by list id, each list in precedence order. */
  readonly lists: (readonly R[])[] = [];
  /** The anchor every route of the list has (`''` for an index's any-path routes). */
  readonly anchors: string[] = [];

  add(anchor: string, routes: readonly R[]): number {
    this.lists.push(routes);
    this.anchors.push(anchor);
    return this.lists.length - 1;
  }
}

const FNV_OFFSET = 0x811c9dc5 | 0;
const FNV_PRIME = 0x01000193;
/** Keep keys within V8's small integers and an Int32Array. */
const KEY_MASK = 0x3fffffff;
/** In a slot's value: some longer anchor continues this prefix after a `/`. */
const DEEPER = 1 << 30;
const ID_MASK = DEEPER - 1;
const SLASH = 0x2f;
const NO_SLOTS = new Int32Array(0);

/** Exported for tests that need colliding anchors. */
export function anchorKey(anchor: string): number {
  let h = FNV_OFFSET;
  for (let i = 0; i < anchor.length; i++) h = Math.imul(h ^ anchor.charCodeAt(i), FNV_PRIME);
  return h & KEY_MASK;
}

/**
 * The first slot a key probes, of 2^(32 - shift): Fibonacci hashing, which spreads all of the
 * key's bits over the slot number (FNV's low bits alone cluster in a small table).
 */
function home(key: number, shift: number): number {
  return Math.imul(key, 0x9e3779b1) >>> shift;
}

export class PathIndex<R extends Anchored> {
  /** List id of the routes that match any path, or -1. */
  readonly #anyId: number;
  /**
   * Open addressing with linear probing, at most half full. One slot per anchor and per prefix
   * that a longer anchor continues: slot s holds the key at 2s and at 2s + 1 the list id + 1 (0
   * for a prefix that is no anchor), with DEEPER set when a longer anchor continues it; 0 marks an
   * empty slot. Strings whose keys collide take separate slots.
   */
  readonly #slots: Int32Array;
  readonly #mask: number;
  readonly #shift: number;
  /** ListStore.anchors, by list id. */
  readonly #anchors: readonly string[];
  readonly #longestAnchor: number;
  readonly #size: number;

  /** `routes` in precedence order; their lists are added to `store`. */
  constructor(routes: readonly R[], store: ListStore<R>) {
    const any = routes.filter((r) => r.anchor === '');
    this.#anyId = any.length > 0 ? store.add('', any) : -1;
    const groups = new Map<string, R[]>();
    let longest = 0;
    for (const r of routes) {
      const anchor = r.anchor;
      if (anchor === '') continue;
      const group = groups.get(anchor);
      if (group !== undefined) group.push(r);
      else groups.set(anchor, [r]);
      longest = Math.max(longest, anchor.length);
    }
    // The prefixes, cut before a `/`, of every anchor: `/api`, `/api/v1` for `/api/v1/users`.
    const continued = new Set<string>();
    for (const anchor of groups.keys())
      for (let j = anchor.indexOf('/', 1); j !== -1; j = anchor.indexOf('/', j + 1))
        continued.add(anchor.slice(0, j));
    let entries = groups.size;
    for (const prefix of continued) if (!groups.has(prefix)) entries++;
    let bits = 0;
    if (entries > 0) {
      bits = 2;
      while (1 << bits < 2 * entries) bits++;
    }
    const slotCount = bits === 0 ? 0 : 1 << bits;
    const slots = slotCount === 0 ? NO_SLOTS : new Int32Array(2 * slotCount);
    const mask = slotCount - 1;
    const shift = 32 - bits;
    const put = (text: string, value: number) => {
      const key = anchorKey(text);
      let s = home(key, shift);
      while (slots[2 * s + 1] !== 0) s = (s + 1) & mask;
      slots[2 * s] = key;
      slots[2 * s + 1] = value;
    };
    for (const [anchor, group] of groups)
      put(anchor, (store.add(anchor, group) + 1) | (continued.has(anchor) ? DEEPER : 0));
    for (const prefix of continued) if (!groups.has(prefix)) put(prefix, DEEPER);
    this.#slots = slots;
    this.#mask = mask;
    this.#shift = shift;
    this.#anchors = store.anchors;
    this.#longestAnchor = longest;
    this.#size = routes.length;
  }

  /** The most candidate lists `collect` can produce. */
  get maxLists(): number {
    return this.#longestAnchor + 1;
  }

  /** Routes held (each once). */
  get size(): number {
    return this.#size;
  }

  /**
   * Write the ids (in the ListStore) of the candidate lists for `path` to `ids[from..n)` and
   * return n. Each list is in precedence order and the lists are disjoint. `ids` must have room
   * for `maxLists` entries after `from`.
   */
  collect(path: string, ids: Int32Array, from: number): number {
    let n = from;
    if (this.#anyId >= 0) ids[n++] = this.#anyId;
    const slots = this.#slots;
    if (slots.length === 0) return n;
    const mask = this.#mask;
    const shift = this.#shift;
    const anchors = this.#anchors;
    const len = path.length;
    const limit = Math.min(len, this.#longestAnchor);
    let h = FNV_OFFSET;
    // A prefix ends at a boundary when the next character is `/` (or at the end of the path):
    // look up the hash of path[0, i) on reaching a slash at i, then extend the hash with it.
    for (let i = 0; i <= limit; i++) {
      const c = i === len ? SLASH : path.charCodeAt(i);
      if (c === SLASH && i > 0) {
        const key = h & KEY_MASK;
        // Whether a longer anchor may start with this prefix: its own slot says so exactly; a
        // slot of another string with the same key may only make the pass go on for nothing.
        let deeper = false;
        for (let s = home(key, shift); ; s = (s + 1) & mask) {
          const value = slots[2 * s + 1]!;
          if (value === 0) break;
          if (slots[2 * s] !== key) continue;
          const id = (value & ID_MASK) - 1;
          if (id >= 0) {
            const a = anchors[id]!;
            if (a.length === i && (i === len ? path === a : path.startsWith(a))) {
              ids[n++] = id;
              deeper = value >= DEEPER;
              break;
            }
          }
          if (value >= DEEPER) deeper = true;
        }
        if (!deeper) return n;
      }
      h = Math.imul(h ^ c, FNV_PRIME);
    }
    return n;
  }
}
