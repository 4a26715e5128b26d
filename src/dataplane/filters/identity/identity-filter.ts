/**
 * Route filter: only verified mTLS client identities on the route's allow-list pass.
 *
 * The identity checked is `ctx.identity`, the one the access log and spans show: set by the TLS
 * listener from a certificate whose chain verified (SPIFFE ID first; see peer-identity.ts), never
 * from a header. No identity → 403 MTLS_REQUIRED; an identity not on the list → 403
 * IDENTITY_DENIED. (403 rather than 401: there is no HTTP authentication scheme to challenge with
 * for a TLS client certificate.)
 */
import { GatewayError } from '../../../errors.ts';
import type { ScalarCell } from '../../../telemetry/metric-cells.ts';
import type { GatewayMetrics } from '../../../telemetry/metrics.ts';
import type { RequestContext } from '../../context.ts';
import type { RequestFilter } from '../filter.ts';
import type { RouteIdentityConfig } from './schema.ts';

/** `provider` label of peregrine_auth_decisions_total for mTLS decisions (`_`: never a configured name). */
export const MTLS_PROVIDER = '_mtls';

type DecisionMetrics = Pick<GatewayMetrics, 'authDecisionCell'>;

/** What may follow a `prefix/*` pattern: segments, none empty, `.` or `..`, no `%`, `?` or `#`. */
const BELOW_RE = /^[A-Za-z0-9._~!$&'()*+,;=:@-]+(\/[A-Za-z0-9._~!$&'()*+,;=:@-]+)*$/;
const DOT_SEGMENT_RE = /(^|\/)\.\.?(\/|$)/;

export interface IdentityMatcher {
  matches(identity: string): boolean;
}

/** Compile allow patterns: exact URIs into a Set, `prefix/*` into prefixes ending in `/`. */
export function compileIdentityPatterns(patterns: readonly string[]): IdentityMatcher {
  const exact = new Set<string>();
  const prefixes: string[] = [];
  for (const p of patterns) {
    if (p.endsWith('/*')) prefixes.push(p.slice(0, -1));
    else exact.add(p);
  }
  return {
    matches(identity: string): boolean {
      if (exact.has(identity)) return true;
      for (const prefix of prefixes) {
        if (!identity.startsWith(prefix)) continue;
        const below = identity.slice(prefix.length);
        if (BELOW_RE.test(below) && !DOT_SEGMENT_RE.test(below)) return true;
      }
      return false;
    },
  };
}

export class IdentityFilter implements RequestFilter {
  readonly name = 'identity';
  readonly route: string;
  readonly #matcher: IdentityMatcher;
  readonly #allowed: ScalarCell;
  readonly #missing: ScalarCell;
  readonly #denied: ScalarCell;

  constructor(route: string, cfg: RouteIdentityConfig, metrics: DecisionMetrics) {
    this.route = route;
    this.#matcher = compileIdentityPatterns(cfg.allow);
    this.#allowed = metrics.authDecisionCell(route, MTLS_PROVIDER, 'allow', 'ok');
    this.#missing = metrics.authDecisionCell(route, MTLS_PROVIDER, 'deny', 'mtls_required');
    this.#denied = metrics.authDecisionCell(route, MTLS_PROVIDER, 'deny', 'identity_denied');
    this.onRequest = this.onRequest.bind(this);
  }

  /** The refusal for this identity, or undefined when it may pass. Counts the decision. */
  check(identity: string | undefined): GatewayError | undefined {
    if (identity === undefined) {
      this.#missing.value += 1;
      return new GatewayError('MTLS_REQUIRED', 'this route requires a verified client certificate');
    }
    if (!this.#matcher.matches(identity)) {
      this.#denied.value += 1;
      return new GatewayError('IDENTITY_DENIED', 'the client identity is not allowed on this route');
    }
    this.#allowed.value += 1;
    return undefined;
  }

  onRequest(ctx: RequestContext): undefined {
    const refusal = this.check(ctx.identity);
    if (ctx.sampled) ctx.decide('identity', refusal ? refusal.code : `allowed ${ctx.identity}`);
    if (refusal) throw refusal;
    return undefined;
  }
}

export function createIdentityFilter(
  routeName: string,
  cfg: RouteIdentityConfig,
  metrics: DecisionMetrics,
): IdentityFilter {
  return new IdentityFilter(routeName, cfg, metrics);
}
