/**
 * Configuration of a listener's TLS (certificates, versions, client authentication) and of the
 * HTTP/2 it offers over TLS. docs/configuration.md and docs/security.md describe every option;
 * defaults live here and nowhere else.
 */
import { z } from 'zod';
import { duration } from '../../config/fields.ts';

/** TLS 1.0 and 1.1 are not accepted (RFC 8996). */
export const TLS_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;
export type TlsVersion = (typeof TLS_VERSIONS)[number];

const tlsVersion = z.enum(TLS_VERSIONS, {
  error: 'expected TLSv1.2 or TLSv1.3 (TLS versions below 1.2 are refused, RFC 8996)',
});

export const CLIENT_AUTH_MODES = ['none', 'optional', 'required'] as const;
export type ClientAuthMode = (typeof CLIENT_AUTH_MODES)[number];

const pemFile = z.string().min(1, 'a file path is required');

/**
 * The TLS 1.2 suites of Mozilla's "intermediate" profile (Server Side TLS 5.7): ECDHE key exchange
 * (forward secrecy) with AEAD ciphers only. Node's own default list adds, with an RSA certificate,
 * static-RSA key exchange and CBC, CCM and ARIA suites. Mozilla's DHE-RSA suites are left out:
 * Node offers no DH group unless `dhparam` is set, so they could never be chosen. TLS 1.3 suites
 * are not named here and stay OpenSSL's defaults (all AEAD with forward secrecy).
 */
export const INTERMEDIATE_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** One more certificate of a listener, chosen by the name the client asks for (SNI). */
const SniCertificateSchema = z.strictObject({
  /** PEM file: the certificate, then any intermediates. Its DNS SANs are the names it serves. */
  cert: pemFile,
  /** PEM file: the unencrypted private key of `cert`. */
  key: pemFile,
});

export const TlsSchema = z
  .strictObject({
    /** PEM file: the server certificate, then any intermediates. Relative paths: from the working directory. */
    cert: pemFile,
    /** PEM file: the unencrypted private key of `cert`. */
    key: pemFile,
    /**
     * More certificates, each served to clients whose SNI name one of its DNS SANs covers (exact,
     * or `*.example.com` for one label); `cert` serves every other client, and clients without SNI.
     */
    certificates: z.array(SniCertificateSchema).max(100).default([]),
    minVersion: tlsVersion.default('TLSv1.2'),
    maxVersion: tlsVersion.default('TLSv1.3'),
    /** OpenSSL cipher list for TLS 1.2; TLS 1.3 suites stay OpenSSL's defaults. Default: Mozilla intermediate. */
    ciphers: z.string().min(1).default(INTERMEDIATE_CIPHERS),
    /** Client certificates: not asked for, asked for and verified if sent, or required. */
    clientAuth: z.enum(CLIENT_AUTH_MODES).default('none'),
    /** PEM file of the CA certificates client certificates must chain to. */
    clientCa: pemFile.optional(),
    /** Time a client has to complete the TLS handshake. */
    handshakeTimeout: duration('10s'),
    /** Watch `cert`, `key`, `certificates` and `clientCa` and load new contents without a restart. */
    watch: z.boolean().default(true),
  })
  .superRefine((t, ctx) => {
    if (t.clientAuth !== 'none' && !t.clientCa)
      ctx.addIssue({
        code: 'custom',
        path: ['clientCa'],
        message: `clientCa is required when clientAuth is ${t.clientAuth}`,
      });
    if (t.minVersion === 'TLSv1.3' && t.maxVersion === 'TLSv1.2')
      ctx.addIssue({ code: 'custom', path: ['maxVersion'], message: 'maxVersion is below minVersion' });
  });

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

export type TlsConfig = z.output<typeof TlsSchema>;
export type Http2Config = z.output<typeof Http2Schema>;
