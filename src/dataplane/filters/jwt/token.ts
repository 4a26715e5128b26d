/**
 * Finding the token in a request, and the structural checks made before any key is looked up or
 * any signature computed. The checks here are cheap and local: they keep malformed tokens, JWE,
 * `alg: none`, key-carrying headers and critical extensions away from key lookup (which may
 * refetch the JWKS) and from jose.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { TokenFailure } from './reasons.ts';

/** One base64url segment, unpadded (RFC 7515 §2). */
const B64URL = /^[A-Za-z0-9_-]+$/;
const BEARER = /^bearer +/i;

/**
 * Header parameters that name or carry keys (`jku`, `x5u`: a URL to fetch keys from; `jwk`,
 * `x5c`: the key itself). Trusting any of them lets the token choose its own key, so a token
 * carrying one is refused outright rather than merely ignored. `crit` is refused too: Peregrine
 * implements no JWS extension, and RFC 7515 §4.1.11 requires rejecting unknown critical ones.
 */
const FORBIDDEN_HEADER_PARAMS = ['jku', 'jwk', 'x5u', 'x5c', 'crit'] as const;

/**
 * The token of a request: `Authorization: Bearer` first, then the given headers (raw token, an
 * optional `Bearer ` prefix is accepted), then the given cookies. Header names are lower case.
 */
export function extractToken(
  headers: IncomingHttpHeaders,
  tokenHeaders: readonly string[],
  tokenCookies: readonly string[],
): string | undefined {
  const auth = headers.authorization;
  if (auth !== undefined) {
    const token = bearerToken(auth);
    if (token !== undefined) return token;
  }
  for (let i = 0; i < tokenHeaders.length; i++) {
    const v = headers[tokenHeaders[i]!];
    if (typeof v === 'string' && v.length > 0) return bearerToken(v) ?? v;
  }
  for (let i = 0; i < tokenCookies.length; i++) {
    const v = cookieValue(headers.cookie, tokenCookies[i]!);
    if (v !== undefined) return v;
  }
  return undefined;
}

function bearerToken(value: string): string | undefined {
  if (value.startsWith('Bearer ')) {
    const token = value.charCodeAt(7) === 32 ? value.slice(7).trimStart() : value.slice(7);
    return token.length > 0 ? token : undefined;
  }
  const m = BEARER.exec(value);
  if (m === null) return undefined;
  const token = value.slice(m[0].length);
  return token.length > 0 ? token : undefined;
}

/** The first cookie called `name` in a Cookie header (RFC 6265 §5.4 joins several with `; `). */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  let start = 0;
  while (start < header.length) {
    let end = header.indexOf(';', start);
    if (end === -1) end = header.length;
    let i = start;
    while (header.charCodeAt(i) === 32 || header.charCodeAt(i) === 9) i++;
    if (header.startsWith(name, i) && header.charCodeAt(i + name.length) === 61 /* = */) {
      let v = header.slice(i + name.length + 1, end).trim();
      if (v.length >= 2 && v.charCodeAt(0) === 34 && v.charCodeAt(v.length - 1) === 34) v = v.slice(1, -1);
      return v.length > 0 ? v : undefined;
    }
    start = end + 1;
  }
  return undefined;
}

/** What the structural checks learned; nothing here is authenticated yet. */
export interface InspectedToken {
  readonly alg: string;
  readonly kid: string | undefined;
  /** The unverified claims: used only to pick a provider and to decide whether a refetch is worth it. */
  readonly payload: Readonly<Record<string, unknown>>;
}

function decodeJson(segment: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
    return typeof v === 'object' && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Structural checks of a compact JWS: three non-empty base64url segments (a JWE has five, and is
 * refused as malformed), a JSON object header with an `alg` other than `none`, no key-carrying
 * header parameter and no `crit`, a string `kid` if any, and a JSON object payload.
 * jose repeats the parsing strictly when it verifies; this pass only has to be cheap and safe.
 */
export function inspectToken(token: string): InspectedToken | TokenFailure {
  const d1 = token.indexOf('.');
  const d2 = d1 === -1 ? -1 : token.indexOf('.', d1 + 1);
  if (d2 === -1 || token.indexOf('.', d2 + 1) !== -1) return 'malformed';
  const h = token.slice(0, d1);
  if (!B64URL.test(h)) return 'malformed';
  const header = decodeJson(h);
  if (header === undefined) return 'malformed';
  const alg = header.alg;
  if (typeof alg !== 'string' || alg.length === 0) return 'malformed';
  if (alg.toLowerCase() === 'none') return 'algorithm_not_allowed';
  for (const p of FORBIDDEN_HEADER_PARAMS) if (Object.hasOwn(header, p)) return 'forbidden_header';
  const kid = header.kid;
  if (kid !== undefined && (typeof kid !== 'string' || kid.length === 0)) return 'malformed';
  const p = token.slice(d1 + 1, d2);
  const s = token.slice(d2 + 1);
  if (!B64URL.test(p) || !B64URL.test(s)) return 'malformed';
  const payload = decodeJson(p);
  if (payload === undefined) return 'malformed';
  return { alg, kid, payload };
}
