/**
 * The route stage that authenticates a request by its bearer JWT and authorises it by scopes and
 * roles, then hands claims to the upstream as headers.
 *
 * Per request, for a token seen before: find the token (a header read), one Map lookup per
 * accepted provider, an `exp` comparison, the route's scope/role checks against precomputed Sets,
 * and the claim headers. That path is synchronous (returns undefined). A new token is inspected
 * structurally (token.ts), attributed to a provider by its unverified `iss`, and verified by that
 * provider (provider.ts), which may wait for a JWKS fetch.
 */
import type { ScalarCell } from '../../../telemetry/metric-cells.ts';
import { type GatewayMetrics, NO_PROVIDER } from '../../../telemetry/metrics.ts';
import type { RequestContext } from '../../context.ts';
import type { RequestFilter } from '../filter.ts';
import {
  claimAt,
  claimHeaderValue,
  compileClaimPath,
  grantedScopes,
  hasAnyRole,
  MAX_CLAIM_HEADER_LENGTH,
} from './claims.ts';
import type { AuthProvider } from './provider.ts';
import type { AuthProviders } from './providers.ts';
import {
  AuthError,
  INSUFFICIENT_ROLE_DESCRIPTION,
  INSUFFICIENT_SCOPE_DESCRIPTION,
  insufficientScopeChallenge,
  missingTokenError,
  type VerifyFailure,
  verifyFailureError,
} from './reasons.ts';
import type { RouteAuthConfig } from './schema.ts';
import { extractToken, inspectToken } from './token.ts';
import type { VerifiedToken } from './token-cache.ts';
import { stripCookies } from './token-cookies.ts';

/**
 * A route's JWT stage, with the header names it owns (see `ownedHeaders`). Unless the route
 * forwards credentials, it also removes the providers' token cookies from the request's
 * `rawHeaders`, which is what the upstream request is built from; `req.headers` is left as the
 * client sent it.
 */
export interface JwtFilter extends RequestFilter {
  /**
   * Lower-case header names the pipeline must remove from the client's request before forwarding:
   * every header this filter sets from claims (so a client cannot pose as someone else), and,
   * unless the route forwards credentials, `authorization` and the providers' token headers.
   */
  readonly ownedHeaders: ReadonlySet<string>;
}

interface ProviderSlot {
  readonly provider: AuthProvider;
  readonly okCell: ScalarCell;
  readonly allowDetail: string;
  readonly allowCachedDetail: string;
}

interface ClaimHeader {
  readonly name: string;
  readonly path: readonly string[];
  readonly droppedDetail: string;
}

class JwtRouteFilter implements JwtFilter {
  readonly name = 'jwt';
  readonly ownedHeaders: ReadonlySet<string>;
  readonly #route: string;
  readonly #required: boolean;
  readonly #slots: readonly ProviderSlot[];
  readonly #byIssuer: ReadonlyMap<string, ProviderSlot>;
  /** Metric label when no provider is known yet: the only provider's name, or `_none`. */
  readonly #label: string;
  readonly #maxTokenSize: number;
  readonly #tokenHeaders: readonly string[];
  readonly #tokenCookies: readonly string[];
  /** Cookies removed before forwarding: the token cookies, unless credentials are forwarded. */
  readonly #strippedCookies: readonly string[] | undefined;
  readonly #scopes: readonly string[] | undefined;
  readonly #rolePath: readonly string[];
  readonly #roles: ReadonlySet<string> | undefined;
  readonly #claimHeaders: readonly ClaimHeader[];
  readonly #scopeChallenge: string;
  readonly #roleChallenge: string;
  readonly #metrics: GatewayMetrics;
  readonly #anonymousCell: ScalarCell;
  readonly #now: () => number;

  constructor(
    route: string,
    cfg: RouteAuthConfig,
    providers: readonly AuthProvider[],
    metrics: GatewayMetrics,
  ) {
    this.#route = route;
    this.#required = cfg.mode === 'required';
    this.#metrics = metrics;
    this.#now = providers[0]!.now;
    this.#label = providers.length === 1 ? providers[0]!.name : NO_PROVIDER;
    this.#anonymousCell = metrics.authDecisionCell(route, NO_PROVIDER, 'allow', 'missing');
    const byIssuer = new Map<string, ProviderSlot>();
    this.#slots = providers.map((provider) => {
      const slot: ProviderSlot = {
        provider,
        okCell: metrics.authDecisionCell(route, provider.name, 'allow', 'ok'),
        allowDetail: `allow ${provider.name}`,
        allowCachedDetail: `allow ${provider.name} (cached)`,
      };
      if (byIssuer.has(provider.issuer))
        throw new Error(`route ${route}: auth providers with the same issuer ${provider.issuer}`);
      byIssuer.set(provider.issuer, slot);
      return slot;
    });
    this.#byIssuer = byIssuer;
    this.#maxTokenSize = Math.max(...providers.map((p) => p.maxTokenSize));
    const tokenHeaders = new Set<string>();
    const tokenCookies = new Set<string>();
    for (const p of providers) {
      const from = p.config.tokenFrom;
      if (from?.header !== undefined) tokenHeaders.add(from.header.toLowerCase());
      if (from?.cookie !== undefined) tokenCookies.add(from.cookie);
    }
    this.#tokenHeaders = [...tokenHeaders];
    this.#tokenCookies = [...tokenCookies];
    this.#scopes = cfg.scopes.length > 0 ? [...new Set(cfg.scopes)] : undefined;
    this.#rolePath = cfg.roles === undefined ? [] : compileClaimPath(cfg.roles.claim);
    this.#roles = cfg.roles === undefined ? undefined : new Set(cfg.roles.anyOf);
    this.#scopeChallenge = insufficientScopeChallenge(INSUFFICIENT_SCOPE_DESCRIPTION, cfg.scopes);
    this.#roleChallenge = insufficientScopeChallenge(INSUFFICIENT_ROLE_DESCRIPTION, []);
    this.#claimHeaders = Object.entries(cfg.forwardClaims).map(([header, path]) => ({
      name: header.toLowerCase(),
      path: compileClaimPath(path),
      droppedDetail: `claim header ${header.toLowerCase()} dropped (not printable ASCII or over ${MAX_CLAIM_HEADER_LENGTH} characters)`,
    }));
    const owned = new Set(this.#claimHeaders.map((h) => h.name));
    if (!cfg.forwardAuthorization) {
      owned.add('authorization');
      for (const h of tokenHeaders) owned.add(h);
    }
    this.ownedHeaders = owned;
    this.#strippedCookies =
      cfg.forwardAuthorization || this.#tokenCookies.length === 0 ? undefined : this.#tokenCookies;
  }

  onRequest(ctx: RequestContext): undefined | Promise<void> {
    const req = ctx.req;
    const token = extractToken(req.headers, this.#tokenHeaders, this.#tokenCookies);
    // Only once `req.headers` exists: Node builds it from `rawHeaders` on first read, and it keeps
    // the cookies as the client sent them (consistent hashing may read one).
    if (this.#strippedCookies !== undefined && req.headers.cookie !== undefined)
      stripCookies(req.rawHeaders, this.#strippedCookies);
    if (token === undefined) return this.#anonymous(ctx);
    if (token.length > this.#maxTokenSize) throw this.#deny(ctx, this.#label, 'too_large');
    const now = this.#now();
    const slots = this.#slots;
    for (let i = 0; i < slots.length; i++) {
      const slot = slots[i]!;
      const verified = slot.provider.cached(token, now);
      if (verified !== undefined) {
        this.#admit(ctx, slot, verified, true);
        return undefined;
      }
    }
    return this.#verify(ctx, token);
  }

  #anonymous(ctx: RequestContext): undefined {
    if (this.#required) throw this.#deny(ctx, this.#label, 'missing');
    this.#anonymousCell.value += 1;
    if (ctx.sampled) ctx.decide('auth', 'anonymous (no token, optional)');
    return undefined;
  }

  async #verify(ctx: RequestContext, token: string): Promise<void> {
    const inspected = inspectToken(token);
    if (typeof inspected === 'string') throw this.#deny(ctx, this.#label, inspected);
    const iss = inspected.payload.iss;
    const slot = typeof iss === 'string' ? this.#byIssuer.get(iss) : undefined;
    if (slot === undefined)
      throw this.#deny(ctx, this.#label, iss === undefined ? 'missing_claim' : 'wrong_issuer');
    const provider = slot.provider;
    if (token.length > provider.maxTokenSize) throw this.#deny(ctx, provider.name, 'too_large');
    if (!provider.algorithms.has(inspected.alg))
      throw this.#deny(ctx, provider.name, 'algorithm_not_allowed');
    const result = await provider.verify(token, inspected);
    if (typeof result === 'string') throw this.#deny(ctx, provider.name, result);
    this.#admit(ctx, slot, result, false);
  }

  #admit(ctx: RequestContext, slot: ProviderSlot, token: VerifiedToken, cached: boolean): void {
    // Identity first: a 403 is still logged with who was refused.
    ctx.claims = token.claims;
    ctx.subject = token.subject;
    const scopes = this.#scopes;
    if (scopes !== undefined) {
      const granted = grantedScopes(token);
      for (let i = 0; i < scopes.length; i++) {
        if (!granted.has(scopes[i]!)) throw this.#forbid(ctx, slot, 'insufficient_scope');
      }
    }
    if (this.#roles !== undefined && !hasAnyRole(token.claims, this.#rolePath, this.#roles))
      throw this.#forbid(ctx, slot, 'insufficient_role');
    const mapped = this.#claimHeaders;
    for (let i = 0; i < mapped.length; i++) {
      const h = mapped[i]!;
      const raw = claimAt(token.claims, h.path);
      if (raw === undefined || raw === null) continue;
      const value = claimHeaderValue(raw);
      if (value === undefined) {
        if (ctx.sampled) ctx.decide('auth', h.droppedDetail);
        continue;
      }
      if (ctx.upstreamHeaders === undefined) ctx.upstreamHeaders = [h.name, value];
      else ctx.upstreamHeaders.push(h.name, value);
    }
    slot.okCell.value += 1;
    if (ctx.sampled) ctx.decide('auth', cached ? slot.allowCachedDetail : slot.allowDetail);
  }

  #deny(ctx: RequestContext, provider: string, reason: VerifyFailure | 'missing'): AuthError {
    this.#metrics.recordAuthDecision(this.#route, provider, 'deny', reason);
    if (ctx.sampled) ctx.decide('auth', `deny ${provider} ${reason}`);
    return reason === 'missing' ? missingTokenError(provider) : verifyFailureError(reason, provider);
  }

  #forbid(
    ctx: RequestContext,
    slot: ProviderSlot,
    reason: 'insufficient_scope' | 'insufficient_role',
  ): AuthError {
    const name = slot.provider.name;
    this.#metrics.recordAuthDecision(this.#route, name, 'deny', reason);
    if (ctx.sampled) ctx.decide('auth', `deny ${name} ${reason}`);
    return reason === 'insufficient_scope'
      ? new AuthError('INSUFFICIENT_SCOPE', reason, name, INSUFFICIENT_SCOPE_DESCRIPTION, {
          'www-authenticate': this.#scopeChallenge,
        })
      : new AuthError('FORBIDDEN', reason, name, INSUFFICIENT_ROLE_DESCRIPTION, {
          'www-authenticate': this.#roleChallenge,
        });
  }
}

/**
 * Build a route's JWT stage, or undefined for `mode: none`. `routeAuth.providers` absent means
 * every provider of `providers`. Throws when a named provider does not exist (the config
 * cross-check reports that first) or when no provider is configured.
 */
export function createJwtFilter(
  routeName: string,
  routeAuth: RouteAuthConfig,
  providers: AuthProviders,
  metrics: GatewayMetrics,
): JwtFilter | undefined {
  if (routeAuth.mode === 'none') return undefined;
  const names = routeAuth.providers ?? providers.names;
  if (names.length === 0) throw new Error(`route ${routeName}: auth needs at least one provider`);
  const list = names.map((n) => {
    const p = providers.get(n);
    if (p === undefined) throw new Error(`route ${routeName}: unknown auth provider ${n}`);
    return p;
  });
  return new JwtRouteFilter(routeName, routeAuth, list, metrics);
}
