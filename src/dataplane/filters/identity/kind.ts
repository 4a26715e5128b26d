/**
 * The `identity` policy kind: only verified mTLS client identities on the allow-list pass
 * (docs/security.md). Inline on a route as `identity: { allow: [...] }`.
 */
import type { PolicyKind } from '../filter.ts';
import { createIdentityFilter } from './identity-filter.ts';
import { type RouteIdentityConfig, RouteIdentitySchema } from './schema.ts';

export const identityPolicy: PolicyKind<RouteIdentityConfig> = {
  kind: 'identity',
  schema: RouteIdentitySchema,
  routeKey: 'identity',
  onePerRoute: true,
  denials: ['MTLS_REQUIRED', 'IDENTITY_DENIED'],
  create(policy, route, env) {
    return createIdentityFilter(route, policy.config, env.metrics);
  },
};
