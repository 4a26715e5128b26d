/**
 * Removing the token cookie from what is forwarded: a route that reads its JWT from a cookie
 * consumes that cookie as a credential, so the upstream must not receive it, just as it does not
 * receive `Authorization` or a token header. Every other cookie is kept byte for byte, in order.
 */

function isOws(c: number): boolean {
  return c === 32 /* SP */ || c === 9 /* HTAB */;
}

/**
 * Whether the cookie-pair in `header[start, end)` is called one of `names`. The name is what
 * precedes the first `=`, without surrounding whitespace, compared case-sensitively (RFC 6265
 * §5.4 sends names as they were set). A pair without `=` has no name and never matches.
 */
function isNamed(header: string, start: number, end: number, names: readonly string[]): boolean {
  let i = start;
  while (i < end && isOws(header.charCodeAt(i))) i++;
  const eq = header.indexOf('=', i);
  if (eq === -1 || eq >= end) return false;
  let j = eq;
  while (j > i && isOws(header.charCodeAt(j - 1))) j--;
  for (let k = 0; k < names.length; k++) {
    const name = names[k]!;
    if (name.length === j - i && header.startsWith(name, i)) return true;
  }
  return false;
}

function isBlank(header: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (!isOws(header.charCodeAt(i))) return false;
  return true;
}

/**
 * A Cookie header value without any cookie called one of `names` (every occurrence): the same
 * string when none is there, undefined when nothing else remains. The pairs kept are copied as
 * they were, each with the separator that preceded it (`a=1;b=2` stays without spaces); empty
 * pairs (`a=1;;b=2`, a trailing `;`) are dropped along the way.
 */
export function withoutCookies(header: string, names: readonly string[]): string | undefined {
  let present = false;
  for (let k = 0; k < names.length && !present; k++) present = header.includes(names[k]!);
  if (!present) return header;
  let out = '';
  let removed = false;
  let start = 0;
  for (;;) {
    let end = header.indexOf(';', start);
    if (end === -1) end = header.length;
    if (isNamed(header, start, end, names)) removed = true;
    else if (!isBlank(header, start, end)) {
      if (out === '') {
        let i = start;
        while (isOws(header.charCodeAt(i))) i++;
        out = header.slice(i, end);
      } else out = `${out};${header.slice(start, end)}`;
    }
    if (end === header.length) break;
    start = end + 1;
  }
  if (!removed) return header;
  return out === '' ? undefined : out;
}

/**
 * Remove the cookies called one of `names` from every Cookie field of a raw header list
 * (`[name, value, ...]`, as Node's `rawHeaders`), in place; a field left empty is removed.
 * HTTP/2 clients may send one field per cookie (RFC 9113 §8.2.3), so each field is handled.
 */
export function stripCookies(rawHeaders: string[], names: readonly string[]): void {
  for (let i = rawHeaders.length - 2; i >= 0; i -= 2) {
    const name = rawHeaders[i]!;
    if (name.length !== 6 || name.toLowerCase() !== 'cookie') continue;
    const value = withoutCookies(rawHeaders[i + 1]!, names);
    if (value === undefined) rawHeaders.splice(i, 2);
    else rawHeaders[i + 1] = value;
  }
}
