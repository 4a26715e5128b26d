/**
 * A rate limit policy where it applies: as a stage of a route's chain (a RequestFilter), or as an
 * upstream's admission gate (an upstream ceiling, asked by Cluster.admit before the breaker and
 * bulkhead, for requests and WebSocket handshakes alike). Both decide through the policy's one
 * RateLimiter; the scope is what `per` makes of the place.
 */
import type { GatewayError } from '../../../errors.ts';
import type { RequestContext } from '../../context.ts';
import type { AdmissionGate } from '../../upstream/cluster.ts';
import type { RequestFilter } from '../filter.ts';
import type { RateLimiter } from './rate-limiter.ts';

export class RateLimitStage implements RequestFilter, AdmissionGate<RequestContext> {
  readonly name: string;
  readonly #limiter: RateLimiter;
  readonly #scope: string;

  constructor(limiter: RateLimiter, scope: string) {
    this.name = limiter.name;
    this.#limiter = limiter;
    this.#scope = scope;
  }

  /** On a route: throws (or rejects with) the refusal. */
  onRequest(ctx: RequestContext): undefined | Promise<void> {
    const verdict = this.#limiter.decide(ctx, this.#scope, true);
    if (verdict === undefined) return undefined;
    if (verdict instanceof Promise) return verdict as Promise<undefined>;
    throw verdict;
  }

  /** On an upstream: returns (or resolves to) the refusal. */
  admit(ctx: RequestContext): GatewayError | undefined | Promise<GatewayError | undefined> {
    return this.#limiter.decide(ctx, this.#scope, false);
  }
}

/** The scope of a policy at a place: '' (one budget), or the route's or upstream's name. */
export function scopeOf(
  per: 'policy' | 'route' | 'upstream',
  route: string | undefined,
  upstream: string,
): string {
  if (per === 'route' && route !== undefined) return route;
  return per === 'policy' ? '' : upstream;
}
