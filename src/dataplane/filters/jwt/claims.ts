/**
 * Reading claims for authorisation (scopes, roles) and rendering them as upstream header values.
 *
 * Header values are what the upstream trusts as identity, so they are built defensively:
 * strings as they are, numbers and booleans as text, arrays joined with `,`, objects as JSON; a
 * value with any character outside printable ASCII (CR, LF, NUL, other controls, DEL, non-ASCII)
 * or longer than MAX_CLAIM_HEADER_LENGTH is dropped whole, never cut: a truncated group list is a
 * different group list.
 */
import type { ClaimPath } from './schema.ts';
import type { VerifiedToken } from './token-cache.ts';

export const MAX_CLAIM_HEADER_LENGTH = 1024;

const PRINTABLE_ASCII = /^[\x20-\x7E]*$/;
const EMPTY_SET: ReadonlySet<string> = new Set();

/** A claim path as segments: `a.b` → ['a', 'b']; a list is taken as given. */
export function compileClaimPath(path: ClaimPath): readonly string[] {
  return typeof path === 'string' ? path.split('.') : [...path];
}

/** The value at `path`, own properties only (a path like `constructor` finds nothing). */
export function claimAt(claims: Readonly<Record<string, unknown>>, path: readonly string[]): unknown {
  let v: unknown = claims;
  for (let i = 0; i < path.length; i++) {
    if (typeof v !== 'object' || v === null || !Object.hasOwn(v, path[i]!)) return undefined;
    v = (v as Record<string, unknown>)[path[i]!];
  }
  return v;
}

/** Granted scopes: the space-separated `scope` claim and the `scp` claim (list or string). */
export function grantedScopes(token: VerifiedToken): ReadonlySet<string> {
  let scopes = token.scopes;
  if (scopes === undefined) {
    const set = new Set<string>();
    addScopes(set, token.claims.scope);
    addScopes(set, token.claims.scp);
    scopes = set.size === 0 ? EMPTY_SET : set;
    token.scopes = scopes;
  }
  return scopes;
}

function addScopes(set: Set<string>, v: unknown): void {
  if (typeof v === 'string') {
    for (const s of v.split(' ')) if (s.length > 0) set.add(s);
  } else if (Array.isArray(v)) {
    for (const s of v) if (typeof s === 'string' && s.length > 0) set.add(s);
  }
}

/** Whether the role claim (a list, or a string) holds any of `anyOf`. */
export function hasAnyRole(
  claims: Readonly<Record<string, unknown>>,
  path: readonly string[],
  anyOf: ReadonlySet<string>,
): boolean {
  const v = claimAt(claims, path);
  if (typeof v === 'string') return anyOf.has(v);
  if (!Array.isArray(v)) return false;
  for (let i = 0; i < v.length; i++) {
    const r: unknown = v[i];
    if (typeof r === 'string' && anyOf.has(r)) return true;
  }
  return false;
}

function scalarText(v: unknown): string | undefined {
  switch (typeof v) {
    case 'string':
      return v;
    case 'number':
      return Number.isFinite(v) ? String(v) : undefined;
    case 'boolean':
      return v ? 'true' : 'false';
    default:
      return v === null || v === undefined ? undefined : JSON.stringify(v);
  }
}

/**
 * The header value for a claim, or undefined when the claim is absent or null, or when the
 * rendered value is not printable ASCII or longer than MAX_CLAIM_HEADER_LENGTH (dropped whole).
 */
export function claimHeaderValue(v: unknown): string | undefined {
  let text: string | undefined;
  if (Array.isArray(v)) {
    const parts: string[] = [];
    for (const item of v) {
      const t = scalarText(item);
      if (t !== undefined) parts.push(t);
    }
    text = parts.join(',');
  } else text = scalarText(v);
  if (text === undefined || text.length > MAX_CLAIM_HEADER_LENGTH || !PRINTABLE_ASCII.test(text))
    return undefined;
  return text;
}
