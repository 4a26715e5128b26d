/**
 * The body of `PUT /v1/services/{service}/instances/{id}`, validated into a Registration: port
 * range, TTL bounds, metadata size, name syntax. Every problem is reported at once, with its
 * field, so a client sees what to fix.
 */
import { z } from 'zod';
import { parseDuration } from '../config/duration.ts';
import type { RegistryConfig } from './schema.ts';
import type { InstanceSpec, Registration } from './store.ts';

export interface FieldProblem {
  readonly field: string;
  readonly message: string;
}

export type ParsedRegistration =
  | {
      readonly ok: true;
      /** The address as sent (checked by the address policy next), or undefined: use the peer's. */
      readonly address: string | undefined;
      readonly build: (address: string) => Registration;
    }
  | { readonly ok: false; readonly problems: readonly FieldProblem[] };

const token64 = (re: RegExp, what: string) => z.string().regex(re, what);

export function createRegistrationParser(
  cfg: Pick<RegistryConfig, 'lease' | 'limits'>,
): (service: string, id: string, body: unknown) => ParsedRegistration {
  const { minTtl, maxTtl, defaultTtl } = cfg.lease;
  const maxMetadataBytes = cfg.limits.maxMetadataBytes;
  const schema = z.strictObject({
    /** IP literal; absent: the address the request came from. */
    address: z.string().max(64).optional(),
    port: z
      .number()
      .int('port must be an integer')
      .min(1, 'port must be 1-65535')
      .max(65535, 'port must be 1-65535'),
    protocol: z.enum(['http', 'https']).default('http'),
    zone: token64(/^[A-Za-z0-9._-]{1,64}$/, 'zone: letters, digits, . _ - (at most 64)').optional(),
    version: token64(/^[A-Za-z0-9._+-]{1,64}$/, 'version: letters, digits, . _ + - (at most 64)').optional(),
    weight: z.number().int().min(1, 'weight must be 1-1000').max(1000, 'weight must be 1-1000').default(1),
    metadata: z
      .record(
        z.string().regex(/^[A-Za-z0-9._/-]{1,63}$/, 'metadata keys: letters, digits, . _ / - (at most 63)'),
        z.string(),
      )
      .default({}),
    /** A duration (`"15s"`) or milliseconds. */
    ttl: z.union([z.string(), z.number()]).optional(),
    state: z.enum(['active', 'draining']).default('active'),
  });

  return function parseRegistration(service, id, body) {
    const result = schema.safeParse(body);
    const problems: FieldProblem[] = [];
    if (!result.success) {
      for (const issue of result.error.issues)
        problems.push({ field: issue.path.join('.') || '(body)', message: issue.message });
      return { ok: false, problems };
    }
    const b = result.data;
    let ttlMs = defaultTtl;
    if (b.ttl !== undefined) {
      const parsed = parseDuration(b.ttl);
      if (parsed === undefined)
        problems.push({ field: 'ttl', message: 'expected a duration such as "15s", or milliseconds' });
      else if (parsed < minTtl || parsed > maxTtl)
        problems.push({ field: 'ttl', message: `ttl must lie between ${minTtl} ms and ${maxTtl} ms` });
      else ttlMs = parsed;
    }
    const metadataBytes = Buffer.byteLength(JSON.stringify(b.metadata));
    if (metadataBytes > maxMetadataBytes)
      problems.push({
        field: 'metadata',
        message: `metadata is ${metadataBytes} bytes as JSON; at most ${maxMetadataBytes} are accepted`,
      });
    if (problems.length > 0) return { ok: false, problems };
    const metadata: Record<string, string> = {};
    for (const k of Object.keys(b.metadata).sort()) metadata[k] = b.metadata[k]!;
    return {
      ok: true,
      address: b.address,
      build(address: string): Registration {
        const spec: InstanceSpec = {
          address,
          port: b.port,
          protocol: b.protocol,
          zone: b.zone ?? null,
          version: b.version ?? null,
          weight: b.weight,
          metadata,
        };
        return { service, id, spec, state: b.state, ttlMs };
      },
    };
  };
}
