/**
 * The `admin` section (static): where the admin API listens, how it is protected when it leaves
 * loopback, and how many local decisions it keeps. docs/configuration.md and docs/security.md.
 */
import { z } from 'zod';
import { address } from '../config/fields.ts';
import { checkSecretRef, secretRefShape } from '../config/secret-ref.ts';
import { TlsSchema } from '../tls/schema.ts';

export const AdminAuthSchema = z.strictObject({
  /** A bearer token every request must carry (exactly one of env or file). */
  token: z.strictObject(secretRefShape).superRefine(checkSecretRef).optional(),
  /** `/healthz` and `/readyz` answer without a credential, for probes and load balancers. */
  openProbes: z.boolean().default(true),
});

export const AdminSchema = z.strictObject({
  /** Loopback by default: the admin API exposes configuration and must not face the internet. */
  address: address.default('127.0.0.1:9901'),
  /** TLS, and with `clientAuth` mTLS: a verified client certificate is a credential. */
  tls: TlsSchema.optional(),
  auth: AdminAuthSchema.prefault({}),
  /** Responses the gateway made itself kept for `GET /v1/decisions/recent` (0: none). */
  recentDecisions: z.number().int().min(0).max(10_000).default(100),
});

export type AdminAuthConfig = z.output<typeof AdminAuthSchema>;
