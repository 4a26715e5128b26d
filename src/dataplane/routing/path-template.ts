/**
 * Path templates such as `/users/:id/orders/:orderId` or `/files/*`, compiled once into segment
 * arrays and matched by walking the path with `indexOf('/')`: no regular expression, no
 * allocation unless the match succeeds.
 *
 * - a literal segment matches itself (case-sensitive);
 * - `:name` matches exactly one non-empty segment; the value is the raw (normalised, not
 *   percent-decoded) segment;
 * - `*`, only as the last segment, matches the rest of the path, possibly empty: `/files/*` matches
 *   `/files`, `/files/` and `/files/a/b` with `*` = `''`, `''` and `a/b`.
 * - a trailing slash is significant: `/users/:id` does not match `/users/1/`.
 */

export const SEGMENT_LITERAL = 0;
export const SEGMENT_PARAM = 1;
export const SEGMENT_WILDCARD = 2;
export type SegmentKind = typeof SEGMENT_LITERAL | typeof SEGMENT_PARAM | typeof SEGMENT_WILDCARD;

export interface PathTemplate {
  readonly source: string;
  readonly kinds: readonly SegmentKind[];
  /** Literal text per segment (`''` for params and the wildcard). */
  readonly literals: readonly string[];
  /** Capture names in path order; the wildcard's name is `*`. */
  readonly names: readonly string[];
  readonly literalChars: number;
  /**
   * The literal segments before the first param or wildcard (`/users` for `/users/:id`, `''` for
   * `/:id`), or the whole template when it has none. Every matching path starts with it, followed
   * by `/` or the end.
   */
  readonly anchor: string;
  /** Index of the first param or wildcard segment; `kinds.length` when there is none. */
  readonly firstDynamic: number;
}

const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Throws an Error describing the problem when the template is malformed. */
export function compileTemplate(source: string): PathTemplate {
  const parts = source.split('/').slice(1);
  const kinds: SegmentKind[] = [];
  const literals: string[] = [];
  const names: string[] = [];
  let literalChars = 0;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (part === '*') {
      if (i !== parts.length - 1) throw new Error(`"*" must be the last segment of ${source}`);
      kinds.push(SEGMENT_WILDCARD);
      literals.push('');
      names.push('*');
    } else if (part.startsWith(':')) {
      const name = part.slice(1);
      if (!PARAM_NAME.test(name) || name === '__proto__')
        throw new Error(`invalid parameter name ${JSON.stringify(part)} in ${source}`);
      if (names.includes(name)) throw new Error(`duplicate parameter :${name} in ${source}`);
      kinds.push(SEGMENT_PARAM);
      literals.push('');
      names.push(name);
    } else {
      kinds.push(SEGMENT_LITERAL);
      literals.push(part);
      literalChars += part.length;
    }
  }
  let firstDynamic = 0;
  while (firstDynamic < kinds.length && kinds[firstDynamic] === SEGMENT_LITERAL) firstDynamic++;
  const anchor = firstDynamic === kinds.length ? source : source.split('/', firstDynamic + 1).join('/');
  return { source, kinds, literals, names, literalChars, anchor, firstDynamic };
}

/**
 * Match `path`, which the caller already knows starts with `t.anchor` followed by `/` or the end
 * (PathIndex establishes that), so only the segments from `firstDynamic` on are examined. On
 * success capture k spans `path.slice(captures[2k], captures[2k + 1])`; `captures` must hold
 * 2 × names.length entries.
 */
export function matchTemplate(t: PathTemplate, path: string, captures: Int32Array): boolean {
  const kinds = t.kinds;
  const len = path.length;
  let pos = t.anchor.length;
  let capture = 0;
  for (let i = t.firstDynamic; i < kinds.length; i++) {
    const kind = kinds[i]!;
    if (pos >= len) {
      // Only a wildcard may match nothing (`/files/*` matches `/files`).
      if (kind !== SEGMENT_WILDCARD) return false;
      captures[capture] = len;
      captures[capture + 1] = len;
      return true;
    }
    // pos is at a `/`: normalised paths have no empty segments other than a trailing one.
    const start = pos + 1;
    if (kind === SEGMENT_WILDCARD) {
      captures[capture] = start;
      captures[capture + 1] = len;
      return true;
    }
    let end = path.indexOf('/', start);
    if (end === -1) end = len;
    if (kind === SEGMENT_LITERAL) {
      const literal = t.literals[i]!;
      if (end - start !== literal.length || !path.startsWith(literal, start)) return false;
    } else {
      if (end === start) return false;
      captures[capture] = start;
      captures[capture + 1] = end;
      capture += 2;
    }
    pos = end;
  }
  return pos === len;
}

export function buildParams(t: PathTemplate, path: string, captures: Int32Array): Record<string, string> {
  const params: Record<string, string> = {};
  const names = t.names;
  for (let k = 0; k < names.length; k++) params[names[k]!] = path.slice(captures[2 * k], captures[2 * k + 1]);
  return params;
}

/** Rank of a segment for specificity; a template that has ended ranks between param and wildcard. */
function rankAt(t: PathTemplate, i: number): number {
  if (i >= t.kinds.length) return 1;
  const kind = t.kinds[i];
  return kind === SEGMENT_LITERAL ? 3 : kind === SEGMENT_PARAM ? 2 : 0;
}

/**
 * Negative when `a` is more specific than `b`. Segments are compared left to right: literal beats
 * `:param` beats the end of a template beats `*` (so `/a/b` beats `/a/b/*`, and of two templates
 * that cannot match the same path the longer comes first); then more literal characters.
 */
export function compareTemplates(a: PathTemplate, b: PathTemplate): number {
  const n = Math.max(a.kinds.length, b.kinds.length);
  for (let i = 0; i < n; i++) {
    const d = rankAt(b, i) - rankAt(a, i);
    if (d !== 0) return d;
  }
  return b.literalChars - a.literalChars;
}
