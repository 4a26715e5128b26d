/**
 * What a request is counted by: its key, built from the parts a policy names (`address`,
 * `identity`, `claim:<path>`, `header:<name>`), and the exemptions that keep a request out of
 * counting. Compiled once per policy; per request only reads.
 */
import { createHash } from 'node:crypto';
import type { RequestContext } from '../../context.ts';
import { createTrustCheck, forwardedClientAddress, type TrustCheck } from '../../forward/trusted-proxies.ts';
import { compileIdentityPatterns, type IdentityMatcher } from '../identity/identity-filter.ts';
import { claimAt, compileClaimPath } from '../jwt/claims.ts';

/** Keys longer than this are stored as their SHA-256 (a client-chosen header must not make long Redis keys). */
const MAX_KEY_LENGTH = 200;

const NO_TRUST: TrustCheck = () => false;

/**
 * The client's address through the listener's trusted proxies (forward/trusted-proxies.ts), worked
 * out once per request and kept on the context for the other policies that read it.
 */
export function clientAddressOf(ctx: RequestContext): string {
  let address = ctx.forwardedAddress;
  if (address === undefined) {
    const xff = ctx.req.headers['x-forwarded-for'];
    address = forwardedClientAddress(
      ctx.clientAddress,
      typeof xff === 'string' ? xff : undefined,
      ctx.pipeline?.listener.trust ?? NO_TRUST,
    );
    ctx.forwardedAddress = address;
  }
  return address;
}

type PartReader = (ctx: RequestContext) => string | undefined;

function readIdentity(ctx: RequestContext): string | undefined {
  return ctx.identity;
}

function claimReader(path: readonly string[]): PartReader {
  return function readClaim(ctx) {
    const claims = ctx.claims;
    if (claims === undefined) return undefined;
    const v = claimAt(claims, path);
    if (typeof v === 'string') return v.length > 0 ? v : undefined;
    return typeof v === 'number' && Number.isFinite(v) ? String(v) : undefined;
  };
}

function headerReader(name: string): PartReader {
  return function readHeader(ctx) {
    const v = ctx.req.headers[name];
    if (typeof v === 'string') return v.length > 0 ? v : undefined;
    // Repeated header lines: one key for the whole list, as the client sent it.
    return Array.isArray(v) && v.length > 0 ? v.join(', ') : undefined;
  };
}

interface Part {
  /** One letter naming the part in the key, so values of different parts never collide. */
  readonly tag: string;
  readonly read: PartReader;
}

function compilePart(spec: string): Part {
  if (spec === 'address') return { tag: 'a', read: clientAddressOf };
  if (spec === 'identity') return { tag: 'i', read: readIdentity };
  if (spec.startsWith('claim:')) return { tag: 'c', read: claimReader(compileClaimPath(spec.slice(6))) };
  if (spec.startsWith('header:')) return { tag: 'h', read: headerReader(spec.slice(7).toLowerCase()) };
  throw new Error(`unknown rate limit key part ${JSON.stringify(spec)}`);
}

function bounded(key: string): string {
  return key.length <= MAX_KEY_LENGTH ? key : `#${createHash('sha256').update(key).digest('base64url')}`;
}

/** The key of a request, or undefined when a part has no value. `none` (no parts): one key, ''. */
export type KeyFunction = (ctx: RequestContext) => string | undefined;

/**
 * Compile a key from its parts. One part: `<tag>:<value>`; several: each value prefixed by its
 * length, so no value can pose as the boundary between two (`a:b` + `c` vs `a` + `b:c`).
 */
export function compileKey(spec: readonly string[]): KeyFunction {
  const parts = spec.map(compilePart);
  if (parts.length === 0) return () => '';
  if (parts.length === 1) {
    const { tag, read } = parts[0]!;
    const prefix = `${tag}:`;
    return function singlePartKey(ctx) {
      const v = read(ctx);
      return v === undefined ? undefined : bounded(prefix + v);
    };
  }
  return function combinedKey(ctx) {
    let key = '';
    for (const { tag, read } of parts) {
      const v = read(ctx);
      if (v === undefined) return undefined;
      key += `${tag}${v.length}:${v}`;
    }
    return bounded(key);
  };
}

/** The key a request without the key's value falls back to (`ifMissing: address`). */
export function fallbackKey(ctx: RequestContext): string {
  return `a:${clientAddressOf(ctx)}`;
}

/** Requests that are never counted: by verified mTLS identity, or by client address. */
export interface Exemptions {
  exempt(ctx: RequestContext): boolean;
}

export function compileExemptions(
  cfg: { readonly identities: readonly string[]; readonly addresses: readonly string[] } | undefined,
): Exemptions | undefined {
  if (cfg === undefined || (cfg.identities.length === 0 && cfg.addresses.length === 0)) return undefined;
  const identities: IdentityMatcher | undefined =
    cfg.identities.length > 0 ? compileIdentityPatterns(cfg.identities) : undefined;
  const addresses: TrustCheck | undefined =
    cfg.addresses.length > 0 ? createTrustCheck(cfg.addresses) : undefined;
  return {
    exempt(ctx) {
      if (identities !== undefined && ctx.identity !== undefined && identities.matches(ctx.identity))
        return true;
      return addresses?.(clientAddressOf(ctx)) === true;
    },
  };
}
