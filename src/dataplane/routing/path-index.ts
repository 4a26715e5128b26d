/**
 * Finds the routes that can possibly match a path without looking at the others.
 *
 * Every route has an anchor: literal text that the request path, cut at a segment boundary (a
 * `/` or the end), must equal. `/users` for prefix `/users`, prefix `/users/`, template
 * `/users/:id` and template `/users/*`; the whole path for an exact path; `''` (any path) for
 * prefix `/` and for templates that start with a param or `*`. The index groups routes by anchor,
 * in precedence order, and keys the groups by a hash of the anchor. For a request, one pass over
 * the path hashes every prefix that ends at a segment boundary (`/users/1` → `/users`,
 * `/users/1`), up to the longest anchor, and looks each up: a few Map lookups with small-integer
 * keys, whatever the number of routes. A group found is then confirmed by comparing its anchor
 * with the path once, so a hash collision costs a comparison and never a wrong match.
 *
 * A route in a collected list is therefore known to have its anchor equal to `path.slice(0,
 * anchor.length)`, with `path` ending or continuing with `/` right after it.
 */

export interface Anchored {
  readonly anchor: string;
}

/** Routes sharing one anchor; `next` chains anchors whose hashes collide. */
interface AnchorGroup<R> {
  readonly anchor: string;
  readonly routes: R[];
  next: AnchorGroup<R> | undefined;
}

const FNV_OFFSET = 0x811c9dc5 | 0;
const FNV_PRIME = 0x01000193;
/** Keep keys within V8's small integers so Map lookups never box a number. */
const KEY_MASK = 0x3fffffff;
const SLASH = 0x2f;

/** Exported for tests that need colliding anchors. */
export function anchorKey(anchor: string): number {
  let h = FNV_OFFSET;
  for (let i = 0; i < anchor.length; i++) h = Math.imul(h ^ anchor.charCodeAt(i), FNV_PRIME);
  return h & KEY_MASK;
}

export class PathIndex<R extends Anchored> {
  /** Routes that match any path, in precedence order. */
  readonly #any: readonly R[];
  readonly #groups: ReadonlyMap<number, AnchorGroup<R>>;
  readonly #longestAnchor: number;

  /** `routes` in precedence order. */
  constructor(routes: readonly R[]) {
    this.#any = routes.filter((r) => r.anchor === '');
    const groups = new Map<number, AnchorGroup<R>>();
    let longest = 0;
    for (const r of routes) {
      const anchor = r.anchor;
      if (anchor === '') continue;
      const key = anchorKey(anchor);
      let group = groups.get(key);
      while (group !== undefined && group.anchor !== anchor) group = group.next;
      if (group !== undefined) group.routes.push(r);
      else groups.set(key, { anchor, routes: [r], next: groups.get(key) });
      longest = Math.max(longest, anchor.length);
    }
    this.#groups = groups;
    this.#longestAnchor = longest;
  }

  /** The most candidate lists `collect` can produce. */
  get maxLists(): number {
    return this.#longestAnchor + 1;
  }

  /** Routes held (each once). */
  get size(): number {
    let n = this.#any.length;
    for (const first of this.#groups.values())
      for (let g: AnchorGroup<R> | undefined = first; g !== undefined; g = g.next) n += g.routes.length;
    return n;
  }

  /**
   * Put the candidate lists for `path` into `lists[from..n)` and return n. Each list is in
   * precedence order and the lists are disjoint. `lists` must have room for `maxLists` entries
   * after `from`.
   */
  collect(path: string, lists: (readonly R[])[], from: number): number {
    let n = from;
    if (this.#any.length > 0) lists[n++] = this.#any;
    const groups = this.#groups;
    if (groups.size === 0) return n;
    const len = path.length;
    const longest = this.#longestAnchor;
    const limit = Math.min(len, longest);
    let h = FNV_OFFSET;
    // A prefix ends at a boundary when the next character is `/` (or at the end of the path):
    // look up the hash of path[0, i) on reaching a slash at i, then extend the hash with it.
    for (let i = 0; i <= limit; i++) {
      const c = i === len ? SLASH : path.charCodeAt(i);
      if (c === SLASH && i > 0) {
        for (let g = groups.get(h & KEY_MASK); g !== undefined; g = g.next) {
          const a = g.anchor;
          if (a.length === i && (i === len ? path === a : path.startsWith(a))) {
            lists[n++] = g.routes;
            break;
          }
        }
      }
      h = Math.imul(h ^ c, FNV_PRIME);
    }
    return n;
  }
}
