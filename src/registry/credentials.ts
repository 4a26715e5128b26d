/**
 * Who may register what. A request to the registration API carries a credential: a verified mTLS
 * identity (SPIFFE ID) that matches a configured pattern, or a bearer token from the configuration.
 * Each credential names the services it may register, renew, drain and remove; every other
 * service is refused.
 *
 * Tokens are given by reference (an environment variable or a file), read once at start, and kept
 * only as SHA-256 digests: a request's token is hashed and looked up, so comparing takes the same
 * time whatever the token, and no token is ever logged or shown.
 */
import { bearerToken, readTokenRef, SecretLoadError, tokenDigest } from '../config/secret-ref.ts';
import type { PeerIdentity } from '../tls/peer-identity.ts';
import type { IdentityCredentialConfig, RegistryConfig, TokenCredentialConfig } from './schema.ts';

export interface Credential {
  readonly kind: 'identity' | 'token';
  /** The SPIFFE ID, or `token:<name>`: for logs, and the key of the request rate limit. */
  readonly principal: string;
  mayRegister(service: string): boolean;
}

export type Authentication =
  | { readonly ok: true; readonly credential: Credential }
  | { readonly ok: false; readonly reason: 'no_credential' | 'bad_credential'; readonly detail: string };

/** A token that cannot be used (unset, unreadable, short, or the same as another). */
export { SecretLoadError as CredentialLoadError };

/** `payments`, `payments-*`, `*` → a matcher of service names. */
export function compileServicePatterns(patterns: readonly string[]): (service: string) => boolean {
  const exact = new Set(patterns.filter((p) => !p.includes('*')));
  const globs = patterns
    .filter((p) => p.includes('*'))
    .map((p) => new RegExp(`^${p.replaceAll('.', '\\.').replaceAll('*', '[a-z0-9._-]*')}$`));
  return function mayRegister(service) {
    return exact.has(service) || globs.some((g) => g.test(service));
  };
}

interface IdentityRule {
  readonly re: RegExp;
  /** With a `{service}` capture: that service only. */
  readonly captures: boolean;
  readonly services: ((service: string) => boolean) | undefined;
}

function compileIdentity(c: IdentityCredentialConfig): IdentityRule {
  const [scheme, rest] = [c.spiffe.slice(0, 'spiffe://'.length), c.spiffe.slice('spiffe://'.length)];
  const segments = rest.split('/').map((seg, i) => {
    if (i === 0) return seg.replaceAll('.', '\\.');
    if (seg === '*') return '[A-Za-z0-9._-]+';
    if (seg === '{service}') return '([a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?)';
    return seg.replaceAll('.', '\\.');
  });
  return {
    re: new RegExp(`^${scheme}${segments.join('/')}$`),
    captures: c.spiffe.includes('{service}'),
    services: c.services ? compileServicePatterns(c.services) : undefined,
  };
}

function readToken(t: TokenCredentialConfig, env: NodeJS.ProcessEnv): string {
  return readTokenRef(t, `registry token ${t.name}`, env);
}

export class Credentials {
  readonly #identities: readonly IdentityRule[];
  /** SHA-256 of each token → its credential. */
  readonly #tokens: ReadonlyMap<string, Credential>;

  /** Reads the token files and variables now; throws CredentialLoadError naming the token that failed. */
  constructor(cfg: RegistryConfig['credentials'], env: NodeJS.ProcessEnv = process.env) {
    this.#identities = cfg.identities.map(compileIdentity);
    const tokens = new Map<string, Credential>();
    for (const t of cfg.tokens) {
      const key = tokenDigest(readToken(t, env)).toString('hex');
      if (tokens.has(key))
        throw new SecretLoadError(
          `registry token ${t.name}: the same token as ${tokens.get(key)!.principal}`,
        );
      tokens.set(key, {
        kind: 'token',
        principal: `token:${t.name}`,
        mayRegister: compileServicePatterns(t.services),
      });
    }
    this.#tokens = tokens;
  }

  get empty(): boolean {
    return this.#identities.length === 0 && this.#tokens.size === 0;
  }

  /**
   * The credential of a request: its connection's verified identity when a pattern matches it,
   * else its bearer token. `peer` must come from a verified chain (peer-identity.ts).
   */
  authenticate(peer: PeerIdentity | undefined, authorization: string | undefined): Authentication {
    const spiffeId = peer?.spiffeId;
    if (spiffeId !== undefined) {
      const credential = this.#identity(spiffeId);
      if (credential !== undefined) return { ok: true, credential };
    }
    if (authorization !== undefined) {
      const token = bearerToken(authorization);
      const credential =
        token === undefined ? undefined : this.#tokens.get(tokenDigest(token).toString('hex'));
      if (credential !== undefined) return { ok: true, credential };
      return { ok: false, reason: 'bad_credential', detail: 'the bearer token is not a registry credential' };
    }
    if (peer !== undefined)
      return {
        ok: false,
        reason: 'bad_credential',
        detail: 'the client certificate identity is not a registry credential',
      };
    return {
      ok: false,
      reason: 'no_credential',
      detail: 'a client certificate or a bearer token is required',
    };
  }

  #identity(spiffeId: string): Credential | undefined {
    for (const rule of this.#identities) {
      const m = rule.re.exec(spiffeId);
      if (m === null) continue;
      if (rule.captures) {
        const only = m[1]!;
        return { kind: 'identity', principal: spiffeId, mayRegister: (service) => service === only };
      }
      return { kind: 'identity', principal: spiffeId, mayRegister: rule.services! };
    }
    return undefined;
  }
}
