/**
 * Configuration of the shared Redis connection (static: read at start). docs/configuration.md
 * lists each key; defaults live here and nowhere else.
 */
import { z } from 'zod';
import { duration } from '../config/fields.ts';
import { checkSecretRef, secretRefShape } from '../config/secret-ref.ts';
import { checkClientPair, pemFile } from '../tls/schema.ts';

export const RedisSchema = z
  .strictObject({
    /**
     * `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS. A password is best given
     * by `password` (a variable or a file, never in the config); the admin API shows the URL
     * without credentials either way.
     */
    url: z
      .string()
      .regex(/^rediss?:\/\/\S+$/, 'expected redis://host:port[/db] or rediss://host:port[/db]')
      .default('redis://127.0.0.1:6379'),
    /** ACL user to AUTH as (Redis 6+); without it, AUTH is for the `default` user (`requirepass`). */
    username: z
      .string()
      .regex(/^[!-~]{1,128}$/, 'printable characters without spaces, at most 128')
      .optional(),
    /** The password, by reference (exactly one of env or file), read once at start. */
    password: z.strictObject(secretRefShape).superRefine(checkSecretRef).optional(),
    /**
     * TLS (`rediss://` only): the CAs Redis's certificate must chain to, and the client certificate
     * for a Redis that demands one (`tls-auth-clients yes`). Files read once at start.
     */
    tls: z
      .strictObject({
        /** PEM file of CA certificates, replacing Node's public bundle (a private CA is trusted alone). */
        ca: pemFile.optional(),
        /** PEM file: the client certificate presented to Redis, then its intermediates. */
        cert: pemFile.optional(),
        /** PEM file: the unencrypted private key of `cert`. */
        key: pemFile.optional(),
      })
      .superRefine((t, ctx) => {
        if (!checkClientPair(t, ctx)) return;
        if (t.ca === undefined && t.cert === undefined)
          ctx.addIssue({
            code: 'custom',
            path: ['ca'],
            message: 'tls needs ca, or cert and key (rediss:// alone verifies against the public CAs)',
          });
      })
      .optional(),
    /** Prepended to every key Peregrine writes and to its pub/sub channels. */
    keyPrefix: z
      .string()
      .max(64)
      .regex(/^[A-Za-z0-9:_.{}-]*$/, 'letters, digits and : _ . { } - only')
      .default('peregrine:'),
    /** Time allowed to establish a connection (TCP, TLS, AUTH, ready check). */
    connectTimeout: duration('2s'),
    /** A command without a reply within this time fails (the caller falls back; nothing waits longer). */
    commandTimeout: duration('500ms'),
    /** Reconnection backoff: doubles from `initialDelay` up to `maxDelay`, with jitter; never gives up. */
    reconnect: z
      .strictObject({
        initialDelay: duration('50ms'),
        maxDelay: duration('5s'),
      })
      .prefault({}),
    /** CLIENT SETNAME of Peregrine's connections (seen in `CLIENT LIST`). */
    connectionName: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,64}$/)
      .default('peregrine'),
  })
  .superRefine((r, ctx) => {
    if (r.password !== undefined && urlHasCredentials(r.url))
      ctx.addIssue({
        code: 'custom',
        path: ['url'],
        message: 'credentials in the url and in password/username: give them in one place (password)',
      });
    if (r.tls !== undefined && !r.url.startsWith('rediss://'))
      ctx.addIssue({ code: 'custom', path: ['tls'], message: 'tls needs a rediss:// url' });
    if (r.username !== undefined && r.password === undefined)
      ctx.addIssue({ code: 'custom', path: ['password'], message: 'username needs a password' });
    if (r.reconnect.maxDelay < r.reconnect.initialDelay)
      ctx.addIssue({
        code: 'custom',
        path: ['reconnect', 'maxDelay'],
        message: 'maxDelay is below initialDelay',
      });
  });

export type RedisConfig = z.output<typeof RedisSchema>;

/** Whether the URL carries a user or password (`redis://user:pass@host`, `redis://:pass@host`). */
export function urlHasCredentials(url: string): boolean {
  try {
    const u = new URL(url);
    return u.username !== '' || u.password !== '';
  } catch {
    return false;
  }
}
