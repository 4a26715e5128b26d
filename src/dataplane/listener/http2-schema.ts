/**
 * Configuration of the HTTP/2 a TLS listener offers. docs/configuration.md and docs/security.md
 * describe every option; defaults live here and nowhere else.
 */
import { z } from 'zod';
import { duration } from '../../config/fields.ts';

export const Http2Schema = z.strictObject({
  /** Offer h2 in ALPN on a TLS listener (HTTP/1.1 is always offered; h2c is never served). */
  enabled: z.boolean().default(true),
  /** Streams a client may have open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxConcurrentStreams: z.number().int().min(1).max(10_000).default(100),
  /** Memory one session may use, in MiB; above it new streams are refused. */
  maxSessionMemory: z.number().int().min(1).max(1024).default(10),
  /** Invalid frames tolerated on one session before it is closed. */
  maxSessionInvalidFrames: z.number().int().min(0).default(100),
  /** Streams refused (over the stream limit) on one session before it is closed. */
  maxSessionRejectedStreams: z.number().int().min(0).default(100),
  /** Unacknowledged PINGs a client may have outstanding. */
  maxOutstandingPings: z.number().int().min(1).default(10),
  /** Entries allowed in one SETTINGS frame. */
  maxSettings: z.number().int().min(1).default(32),
  /**
   * Rapid reset (CVE-2023-44487): a client that resets more than `maxResets` streams before their
   * response began, within `window`, has its session closed with GOAWAY ENHANCE_YOUR_CALM.
   */
  rapidReset: z
    .strictObject({
      maxResets: z.number().int().min(1).default(200),
      window: duration('10s'),
    })
    .prefault({}),
  /** A session with no open stream and no traffic for this long is closed with GOAWAY. */
  idleTimeout: duration('60s'),
  /**
   * A session whose peer sends nothing and takes none of our bytes for this long (its connection
   * vanished, or it stopped reading) is destroyed with its streams; a PING asks a quiet one for a
   * sign of life half-way. 0 disables.
   */
  unresponsiveTimeout: duration('30s'),
});

export type Http2Config = z.output<typeof Http2Schema>;
