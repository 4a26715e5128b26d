/**
 * The registry of route policy kinds. A kind is a folder under `filters/` (schema, factory,
 * per-request function, tests) and one entry here; the config schema, validation, the snapshot's
 * compile and the pipeline's report of denials all read this list, and nothing else names a
 * kind. The order is the order of the inline route keys in a chain (`identity:` before `auth:`).
 */
import type { PolicyKind, PolicyState } from './filter.ts';
import { identityPolicy } from './identity/kind.ts';
import { jwtPolicy } from './jwt/kind.ts';
import { rateLimitPolicy } from './rate-limit/kind.ts';

/** A kind whatever its config type (PolicyKind's methods are checked bivariantly). */
export type AnyPolicyKind = PolicyKind<unknown, PolicyState | undefined>;

export const POLICY_KINDS: readonly AnyPolicyKind[] = [identityPolicy, jwtPolicy, rateLimitPolicy];
