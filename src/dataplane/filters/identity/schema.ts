/**
 * A route's `identity` block: which verified mTLS client identities may use the route.
 * docs/security.md describes the patterns.
 */
import { z } from 'zod';

/**
 * An identity pattern: an exact URI (`spiffe://prod.example/ns/payments/sa/api`), or a URI ending
 * in `/*`, matching any identity strictly below that path (one or more further segments). `*`
 * anywhere else is refused, so a pattern never means more than it appears to.
 */
export const IDENTITY_PATTERN_RE = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[\x21-\x29\x2b-\x7e]+?(\/\*)?$/;

const identityPattern = z
  .string()
  .max(2048)
  .regex(
    IDENTITY_PATTERN_RE,
    'expected a URI such as spiffe://prod.example/ns/payments/sa/api, or one ending in /* for everything below it',
  );

export const RouteIdentitySchema = z.strictObject({
  /** Verified client identities allowed on the route; anything else gets 403. */
  allow: z.array(identityPattern).min(1, 'list at least one identity pattern'),
});

export type RouteIdentityConfig = z.output<typeof RouteIdentitySchema>;
