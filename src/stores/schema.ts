/**
 * Configuration of the shared Redis connection (static: read at start). docs/configuration.md
 * lists each key; defaults live here and nowhere else.
 */
import { z } from 'zod';
import { duration } from '../config/fields.ts';

export const RedisSchema = z
  .strictObject({
    /**
     * `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS. A password is best given
     * through interpolation (`${REDIS_PASSWORD}`); the admin API shows the URL without it.
     */
    url: z
      .string()
      .regex(/^rediss?:\/\/\S+$/, 'expected redis://host:port[/db] or rediss://host:port[/db]')
      .default('redis://127.0.0.1:6379'),
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
    if (r.reconnect.maxDelay < r.reconnect.initialDelay)
      ctx.addIssue({
        code: 'custom',
        path: ['reconnect', 'maxDelay'],
        message: 'maxDelay is below initialDelay',
      });
  });

export type RedisConfig = z.output<typeof RedisSchema>;
