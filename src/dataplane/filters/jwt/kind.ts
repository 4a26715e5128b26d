/**
 * The `jwt` policy kind: a bearer token verified against the token issuers of `auth.providers`,
 * then scopes, roles and claim headers (docs/security.md). Inline on a route as `auth: {...}`.
 * The providers' key sets and token caches are shared by every JWT policy and kept across
 * reloads by providers.ts.
 */
import type { PolicyKind } from '../filter.ts';
import { createJwtFilter } from './jwt-filter.ts';
import { checkJwtPolicy, type RouteAuthConfig, RouteAuthSchema } from './schema.ts';

export const jwtPolicy: PolicyKind<RouteAuthConfig> = {
  kind: 'jwt',
  schema: RouteAuthSchema,
  routeKey: 'auth',
  onePerRoute: true,
  denials: ['AUTH_REQUIRED', 'INVALID_TOKEN', 'INSUFFICIENT_SCOPE', 'FORBIDDEN', 'AUTH_UNAVAILABLE'],
  check(settings, config, path, issues) {
    checkJwtPolicy(settings, config, path, issues);
  },
  create(policy, route, env) {
    return createJwtFilter(route, policy.config, env.auth, env.metrics);
  },
};
