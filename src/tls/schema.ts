/**
 * Configuration of TLS: a listener's (certificates, versions, client authentication) and an
 * upstream's (trust, client certificate, server name, expected identity). docs/configuration.md
 * and docs/security.md describe every option; defaults live here and nowhere else.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { duration } from '../config/fields.ts';
import { isIdentityPattern, isWorkloadId } from './spiffe.ts';

/** TLS 1.0 and 1.1 are not accepted (RFC 8996). */
export const TLS_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;
export type TlsVersion = (typeof TLS_VERSIONS)[number];

const tlsVersion = z.enum(TLS_VERSIONS, {
  error: 'expected TLSv1.2 or TLSv1.3 (TLS versions below 1.2 are refused, RFC 8996)',
});

export const CLIENT_AUTH_MODES = ['none', 'optional', 'required'] as const;
export type ClientAuthMode = (typeof CLIENT_AUTH_MODES)[number];

/** A PEM file's path (the TLS settings of listeners, upstreams and Redis). */
export const pemFile = z.string().min(1, 'a file path is required');

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

export type TlsConfig = z.output<typeof TlsSchema>;

/**
 * What an upstream's connections speak, offered in ALPN over TLS: `http1` (the default) offers
 * only HTTP/1.1; `h2` only HTTP/2; `auto` both, the upstream choosing. Plain `http://` endpoints
 * speak HTTP/1.1 (h2c is never used). Room for `grpc` later: HTTP/2 with trailers end to end.
 */
export const UPSTREAM_PROTOCOLS = ['http1', 'h2', 'auto'] as const;
export type UpstreamProtocol = (typeof UPSTREAM_PROTOCOLS)[number];

/** ALPN protocol IDs offered per `protocol`. */
export const ALPN_OFFERS: Readonly<Record<UpstreamProtocol, readonly string[]>> = {
  http1: ['http/1.1'],
  h2: ['h2'],
  auto: ['h2', 'http/1.1'],
};

const workloadId = z
  .string()
  .refine(isWorkloadId, 'expected a SPIFFE ID with a path, e.g. spiffe://prod.example/ns/orders/sa/api');

const identityPattern = z
  .string()
  .refine(
    isIdentityPattern,
    'expected a SPIFFE ID pattern such as spiffe://prod.example/ns/*/sa/{service}: a literal trust domain, `*` for one whole path segment, {service} for a whole segment that is the service name',
  );

/** A DNS name the certificate is checked against and sent as SNI (never an IP address: RFC 6066). */
const serverName = z
  .string()
  .max(253)
  .regex(
    /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/,
    'expected a DNS name, e.g. orders.internal',
  )
  .refine((s) => isIP(s) === 0, 'an IP address is not a server name (SNI carries DNS names only)');

export const UpstreamIdentitySchema = z
  .strictObject({
    /** SPIFFE IDs the upstream may present; one of them must be its certificate's. */
    expect: z.array(workloadId).min(1, 'list at least one SPIFFE ID').max(100).optional(),
    /**
     * A pattern the upstream's SPIFFE ID must match: `{service}` is a segment naming the service (the
     * registry service it is discovered from, else the upstream's name), `*` any one segment.
     */
    expectPattern: identityPattern.optional(),
  })
  .superRefine((i, ctx) => {
    if ((i.expect === undefined) === (i.expectPattern === undefined))
      ctx.addIssue({ code: 'custom', message: 'identity takes exactly one of expect and expectPattern' });
  });

/**
 * A client certificate and its key come together (upstream TLS, `redis.tls`). False when one is
 * missing, with the issue on the one that is.
 */
export function checkClientPair(t: { cert?: string; key?: string }, ctx: z.RefinementCtx): boolean {
  if ((t.cert === undefined) === (t.key === undefined)) return true;
  ctx.addIssue({
    code: 'custom',
    path: [t.cert === undefined ? 'cert' : 'key'],
    message: 'cert and key come together (the client certificate and its private key)',
  });
  return false;
}

export const UpstreamTlsSchema = z
  .strictObject({
    /**
     * PEM file of the CA certificates the upstream's chain must end at. Replaces Node's bundle of
     * public CAs (a private CA is never trusted alongside them). Absent: Node's bundle.
     */
    ca: pemFile.optional(),
    /** PEM file: the client certificate presented when the upstream asks for one (mTLS), then intermediates. */
    cert: pemFile.optional(),
    /** PEM file: the unencrypted private key of `cert`. */
    key: pemFile.optional(),
    /** Sent as SNI and, without `identity`, the name the certificate must carry. Default: the endpoint's host. */
    serverName: serverName.optional(),
    /** Verify the upstream's SPIFFE ID (X.509-SVID) instead of a host name. Needs `ca`. */
    identity: UpstreamIdentitySchema.optional(),
    minVersion: tlsVersion.default('TLSv1.2'),
    maxVersion: tlsVersion.default('TLSv1.3'),
    /** Watch `ca`, `cert` and `key` and use new contents for new connections without a restart. */
    watch: z.boolean().default(true),
  })
  .superRefine((t, ctx) => {
    checkClientPair(t, ctx);
    if (t.identity !== undefined && t.ca === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['ca'],
        message: "identity needs ca: a SPIFFE ID means something only under its trust domain's CA",
      });
    if (t.minVersion === 'TLSv1.3' && t.maxVersion === 'TLSv1.2')
      ctx.addIssue({ code: 'custom', path: ['maxVersion'], message: 'maxVersion is below minVersion' });
  });

export type UpstreamTlsConfig = z.output<typeof UpstreamTlsSchema>;
export type UpstreamIdentityConfig = z.output<typeof UpstreamIdentitySchema>;

/**
 * Upstream transport rules that span keys: `tls` and HTTP/2 need `https://` endpoints (a client
 * certificate or an expected identity over plain HTTP would be a false sense of security, and h2c
 * is never spoken). Endpoints discovered from the registry are checked as they arrive (the cluster
 * skips plain ones); DNS discovery says its scheme here.
 */
export function checkUpstreamTransport(
  u: {
    endpoints?: readonly (string | { url: string })[] | undefined;
    discovery?: { dns?: string; protocol?: string } | object | undefined;
    tls?: unknown;
    protocol?: UpstreamProtocol;
  },
  addIssue: (path: (string | number)[], message: string) => void,
): void {
  const needsTls =
    u.tls !== undefined ? 'tls' : u.protocol !== undefined && u.protocol !== 'http1' ? 'protocol' : undefined;
  if (needsTls === undefined) return;
  const why = (what: string): string =>
    needsTls === 'tls'
      ? `tls applies to https:// endpoints; ${what} would be spoken to in clear`
      : `protocol ${u.protocol} needs https:// endpoints (HTTP/2 without TLS, h2c, is not spoken)`;
  (u.endpoints ?? []).forEach((e, i) => {
    const url = typeof e === 'string' ? e : e.url;
    if (url.startsWith('http://')) addIssue(['endpoints', i], why(url));
  });
  const dns = u.discovery as { dns?: string; protocol?: string } | undefined;
  if (dns?.dns !== undefined && dns.protocol !== 'https')
    addIssue(['discovery', 'protocol'], why(`${dns.dns} (discovery.protocol: http)`));
}
