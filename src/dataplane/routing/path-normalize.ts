/**
 * Normalises the request-target of an origin-form request once, so that routing, authorisation and
 * forwarding all see the same path (threat catalogue B). Node does none of this.
 *
 * Rules, in order (docs/routing.md has examples):
 * - the target must start with `/` (origin-form, RFC 9112 §3.2.1); absolute-form, authority-form
 *   and `*` are `not-origin-form`, and the caller decides what to do with them;
 * - the query (from the first `?`) is kept verbatim, with its `?`; a `#fragment` is dropped;
 * - raw backslash and control characters (U+0000–U+001F, U+007F) are rejected;
 * - percent escapes must be `%XX` with hex digits; `%2F`, `%5C` and `%00` are rejected (an encoded
 *   slash or backslash would let the upstream see a different path than the one routed; an encoded
 *   NUL truncates paths in C-based upstreams); escapes of unreserved characters (RFC 3986 §2.3:
 *   ALPHA DIGIT - . _ ~) are decoded and every other escape is upper-cased (RFC 3986 §6.2.2);
 * - repeated slashes are merged, then dot-segments are removed (RFC 3986 §5.2.4), after decoding,
 *   so `%2e%2e` is `..`; a trailing `/`, `/.` or `/..` leaves a trailing slash;
 * - a dot-segment with `;` parameters (`..;x=y`, `.;`, also `%2e%2e;`) is rejected
 *   (`dot-segment-parameters`): servlet containers (Tomcat and others) strip `;params` before
 *   resolving dot-segments and would read `/pub/..;/admin` as `/admin`, a path that was never
 *   routed. Any other `;` is an ordinary character.
 */

export type PathError =
  | 'not-origin-form'
  | 'control-character'
  | 'backslash'
  | 'invalid-percent-encoding'
  | 'encoded-slash'
  | 'encoded-backslash'
  | 'encoded-nul'
  | 'dot-segment-parameters';

export interface NormalizedTarget {
  /** Normalised path, always starting with `/`. */
  readonly path: string;
  /** Query string verbatim including its leading `?`, or `''`. */
  readonly query: string;
}

export type NormalizeResult = NormalizedTarget | { readonly error: PathError };

const SLASH = 0x2f;
const DOT = 0x2e;
const PERCENT = 0x25;
const QUESTION = 0x3f;
const HASH = 0x23;
const BACKSLASH = 0x5c;
const SEMICOLON = 0x3b;
const DEL = 0x7f;
const HEX_UPPER = '0123456789ABCDEF';

/** End of a path segment: `/`, `?`, `#`, or past the end (charCodeAt gives NaN). */
function isSegmentEnd(c: number): boolean {
  return c === SLASH || c === QUESTION || c === HASH || Number.isNaN(c);
}

export function normalizePath(rawTarget: string): NormalizeResult {
  if (rawTarget.charCodeAt(0) !== SLASH) return { error: 'not-origin-form' };
  const len = rawTarget.length;
  let end = len;
  let slow = false;
  // One scan finds the end of the path, rejects forbidden characters and decides whether the
  // path is already normal (no `%`, no `//`, no `.` or `..` segment).
  for (let i = 0; i < len; i++) {
    const c = rawTarget.charCodeAt(i);
    if (c === QUESTION || c === HASH) {
      end = i;
      break;
    }
    if (c <= 0x1f || c === DEL) return { error: 'control-character' };
    if (c === BACKSLASH) return { error: 'backslash' };
    if (c === PERCENT) slow = true;
    else if (c === SLASH) {
      if (i > 0 && rawTarget.charCodeAt(i - 1) === SLASH) slow = true;
    } else if (c === DOT && rawTarget.charCodeAt(i - 1) === SLASH) {
      // `.`, `..`, `.;…` and `..;…` segments take the slow path (the last two are rejected there).
      let next = rawTarget.charCodeAt(i + 1);
      if (next === DOT) next = rawTarget.charCodeAt(i + 2);
      if (isSegmentEnd(next) || next === SEMICOLON) slow = true;
    }
  }

  let query = '';
  if (end < len && rawTarget.charCodeAt(end) === QUESTION) {
    const hash = rawTarget.indexOf('#', end + 1);
    query = hash === -1 ? rawTarget.slice(end) : rawTarget.slice(end, hash);
  }
  const rawPath = end === len ? rawTarget : rawTarget.slice(0, end);
  if (!slow) return { path: rawPath, query };

  const decoded = decodeUnreserved(rawPath);
  if (decoded.error !== undefined) return { error: decoded.error };
  const path = removeDotSegments(decoded.value);
  return path === undefined ? { error: 'dot-segment-parameters' } : { path, query };
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

function isUnreserved(c: number): boolean {
  return (
    (c >= 0x41 && c <= 0x5a) || // A-Z
    (c >= 0x61 && c <= 0x7a) || // a-z
    (c >= 0x30 && c <= 0x39) || // 0-9
    c === 0x2d || // -
    c === DOT ||
    c === 0x5f || // _
    c === 0x7e // ~
  );
}

type Decoded = { value: string; error: undefined } | { value: undefined; error: PathError };

function decodeUnreserved(path: string): Decoded {
  let out = '';
  let last = 0;
  let i = path.indexOf('%');
  while (i !== -1) {
    const hi = hexValue(path.charCodeAt(i + 1));
    const lo = hexValue(path.charCodeAt(i + 2));
    if (hi < 0 || lo < 0) return { value: undefined, error: 'invalid-percent-encoding' };
    const byte = hi * 16 + lo;
    if (byte === SLASH) return { value: undefined, error: 'encoded-slash' };
    if (byte === BACKSLASH) return { value: undefined, error: 'encoded-backslash' };
    if (byte === 0) return { value: undefined, error: 'encoded-nul' };
    out += path.slice(last, i);
    out += isUnreserved(byte) ? String.fromCharCode(byte) : `%${HEX_UPPER[hi]}${HEX_UPPER[lo]}`;
    last = i + 3;
    i = path.indexOf('%', last);
  }
  return { value: last === 0 ? path : out + path.slice(last), error: undefined };
}

/** `.;…` or `..;…`: a dot-segment to a server that strips `;` parameters first. */
function isDotSegmentWithParameters(s: string): boolean {
  if (s.charCodeAt(0) !== DOT) return false;
  const k = s.charCodeAt(1) === DOT ? 2 : 1;
  return s.charCodeAt(k) === SEMICOLON;
}

/**
 * Merge repeated slashes and apply RFC 3986 §5.2.4 to an absolute path; undefined when a segment
 * is a dot-segment with `;` parameters.
 */
function removeDotSegments(path: string): string | undefined {
  const segments = path.split('/');
  const out: string[] = [];
  // segments[0] is the empty string before the leading slash.
  for (let k = 1; k < segments.length; k++) {
    const s = segments[k]!;
    if (s === '' || s === '.') continue;
    if (s === '..') out.pop();
    else if (isDotSegmentWithParameters(s)) return undefined;
    else out.push(s);
  }
  if (out.length === 0) return '/';
  const lastSegment = segments[segments.length - 1];
  const trailingSlash = lastSegment === '' || lastSegment === '.' || lastSegment === '..';
  return `/${out.join('/')}${trailingSlash ? '/' : ''}`;
}
