/**
 * Configuration of JWT authentication: the top-level `auth.providers` (who issues tokens and
 * where their keys are) and a route's `auth` block (whether a token is needed, which scopes or
 * roles, which claims go upstream as headers). docs/security.md describes every option; defaults
 * live here and nowhere else.
 */
import { createPublicKey, type KeyObject, X509Certificate } from 'node:crypto';
import { z } from 'zod';
import { duration, isRecord, size } from '../../../config/fields.ts';

/**
 * Asymmetric JWS algorithms only. HMAC (HS*) is left out on purpose: keys come from a JWKS or PEM
 * public keys, and accepting HS* next to them is the classic key-confusion attack (a token
 * "signed" with the public key as the HMAC secret).
 */
export const JWT_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
] as const;
export type JwtAlgorithm = (typeof JWT_ALGORITHMS)[number];

const providerName = z
  .string()
  .regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/, 'names use letters, digits, _ . - (at most 63 characters)');

/** RFC 9110 token characters. */
const HEADER_NAME_RE = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

/**
 * Headers a claim mapping may not set: hop-by-hop and framing headers, Host, credentials, and the
 * forwarding and tracing headers the gateway itself owns.
 */
const RESERVED_HEADERS: ReadonlySet<string> = new Set([
  'host',
  'authorization',
  'proxy-authorization',
  'cookie',
  'set-cookie',
  'content-length',
  'content-type',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'upgrade',
  'expect',
  'forwarded',
  'via',
  'x-request-id',
  'traceparent',
  'tracestate',
  'baggage',
  'b3',
]);

/** A claim: a name, a dotted path (`realm_access.roles`), or segments (for names holding dots). */
const claimPath = z
  .union([
    z.string().regex(/^[^.\s]+(\.[^.\s]+)*$/, 'a claim name or dotted path, e.g. realm_access.roles'),
    z.array(z.string().min(1)).min(1),
  ])
  .meta({
    description:
      'Claim name or dotted path (realm_access.roles); a list of segments for names that contain dots',
  });

/** RFC 6749 scope-token: printable ASCII without space, `"` and `\`. */
const scopeToken = z
  .string()
  .regex(/^[\x21\x23-\x5B\x5D-\x7E]+$/, 'a scope is printable ASCII without spaces');

function isLoopbackHost(hostname: string): boolean {
  return (
    hostname === 'localhost' ||
    hostname === '[::1]' ||
    hostname === '::1' ||
    /^127(\.\d{1,3}){3}$/.test(hostname)
  );
}

/** Node's key type and curve for each algorithm. */
const NODE_KEY_TYPES: Readonly<Record<JwtAlgorithm, { type: string; curve?: string }>> = {
  RS256: { type: 'rsa' },
  RS384: { type: 'rsa' },
  RS512: { type: 'rsa' },
  PS256: { type: 'rsa' },
  PS384: { type: 'rsa' },
  PS512: { type: 'rsa' },
  ES256: { type: 'ec', curve: 'prime256v1' },
  ES384: { type: 'ec', curve: 'secp384r1' },
  ES512: { type: 'ec', curve: 'secp521r1' },
  EdDSA: { type: 'ed25519' },
  Ed25519: { type: 'ed25519' },
};

function keyObjectOf(material: string | Record<string, unknown>): KeyObject | undefined {
  try {
    if (typeof material !== 'string') return createPublicKey({ key: material as never, format: 'jwk' });
    if (material.includes('-----BEGIN CERTIFICATE-----')) return new X509Certificate(material).publicKey;
    return createPublicKey({ key: material, format: 'pem' });
  } catch {
    return undefined;
  }
}

/** Whether a configured key (PEM or JWK) can verify any of `algorithms`. */
function fitsAny(material: string | Record<string, unknown>, algorithms: readonly JwtAlgorithm[]): boolean {
  const key = keyObjectOf(material);
  if (key === undefined) return true; // reported by the key's own check
  return algorithms.some((alg) => {
    const t = NODE_KEY_TYPES[alg];
    return (
      key.asymmetricKeyType === t.type &&
      (t.curve === undefined || key.asymmetricKeyDetails?.namedCurve === t.curve)
    );
  });
}

/** Why `pem` is not a usable public key, or undefined when it is one. */
export function pemProblem(pem: string): string | undefined {
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem))
    return 'this is a private key; configure the public key';
  try {
    if (pem.includes('-----BEGIN CERTIFICATE-----')) new X509Certificate(pem);
    else createPublicKey({ key: pem, format: 'pem' });
    return undefined;
  } catch {
    return 'not a PEM public key (-----BEGIN PUBLIC KEY-----) or certificate';
  }
}

const pemKey = z.string().superRefine((pem, ctx) => {
  const problem = pemProblem(pem);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

/** Members of a JWK that only a private or symmetric key has. */
const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'] as const;

const inlineJwks = z
  .object({ keys: z.array(z.record(z.string(), z.unknown())).min(1, 'a JWKS needs at least one key') })
  .superRefine((jwks, ctx) => {
    jwks.keys.forEach((jwk, i) => {
      if (PRIVATE_JWK_MEMBERS.some((m) => m in jwk)) {
        ctx.addIssue({
          code: 'custom',
          path: ['keys', i],
          message: 'private or symmetric key material; only public keys belong here',
        });
        return;
      }
      try {
        createPublicKey({ key: jwk as never, format: 'jwk' });
      } catch {
        ctx.addIssue({ code: 'custom', path: ['keys', i], message: 'not a valid public JWK' });
      }
    });
  });

export const JwksCacheSchema = z.strictObject({
  /** How long a fetched key set is used before a background refresh when the response has no max-age. */
  refreshInterval: duration('10m'),
  /** Lower bound for a Cache-Control max-age (max-age=0 or no-cache would otherwise mean every request). */
  minRefreshInterval: duration('1m'),
  /** Upper bound for a Cache-Control max-age: a removed key stops verifying within this time. */
  maxRefreshInterval: duration('1h'),
  /** At most one refetch per this interval for tokens naming an unknown kid (rotation). */
  minRefetchInterval: duration('30s'),
  /** Whole fetch (connect, TLS, headers, body). Bounds what a request waiting on a refetch can lose. */
  timeout: duration('2s'),
  /** Keep serving the last good key set this long after it was last confirmed while refreshes fail. */
  maxStale: duration('24h'),
  /** Larger JWKS responses are refused. */
  maxResponseSize: size('1MiB'),
});

export const AuthProviderSchema = z
  .strictObject({
    /** Expected `iss`; a route with several providers picks the one whose issuer matches. */
    issuer: z.string().min(1),
    /** Remote JWKS (exactly one of jwksUri, jwks, publicKeys). */
    jwksUri: z.url({ protocol: /^https?$/, error: 'expected an https:// URL' }).optional(),
    /** Inline JWKS document. */
    jwks: inlineJwks.optional(),
    /** PEM public keys or certificates (`${ENV}` works), optionally with the kid tokens name them by. */
    publicKeys: z
      .array(z.union([pemKey, z.strictObject({ kid: z.string().min(1).optional(), pem: pemKey })]))
      .min(1)
      .optional(),
    /** Accepted `alg` values. Required: no default accepts whatever a key happens to fit. */
    algorithms: z.array(z.enum(JWT_ALGORITHMS)).min(1, 'list the accepted algorithms, e.g. [ES256]'),
    /** Accepted `aud` values (any one must be present). Absent: `aud` is not checked. */
    audiences: z.array(z.string().min(1)).min(1).optional(),
    /** Claims that must be present besides `exp` (always required). */
    requiredClaims: z.array(z.string().min(1)).default([]),
    /** Expected `typ` header, e.g. `at+jwt` (RFC 9068); compared as a media type. Absent: not checked. */
    requiredType: z.string().min(1).optional(),
    /** Allowed clock skew for `exp` and `nbf`. */
    clockTolerance: duration('30s'),
    /** Longer tokens are refused before any parsing. */
    maxTokenSize: size('8KiB'),
    /** Where else to look for the token; `Authorization: Bearer` is always tried first. */
    tokenFrom: z
      .strictObject({
        header: z
          .string()
          .regex(HEADER_NAME_RE, 'a header name')
          .refine((h) => !['authorization', 'cookie'].includes(h.toLowerCase()), {
            message: 'Authorization is always read; use tokenFrom.cookie for cookies',
          })
          .optional(),
        cookie: z.string().regex(HEADER_NAME_RE, 'a cookie name').optional(),
      })
      .optional(),
    /** Allow an http:// jwksUri to a non-loopback host (keys over plain HTTP can be replaced in transit). */
    allowInsecureJwksUri: z.boolean().default(false),
    jwksCache: JwksCacheSchema.prefault({}),
    tokenCache: z
      .strictObject({
        /** Verified tokens kept (each until its `exp`); 0 disables the cache. */
        maxEntries: z.number().int().min(0).default(10_000),
      })
      .prefault({}),
  })
  .superRefine((p, ctx) => {
    const sources = (['jwksUri', 'jwks', 'publicKeys'] as const).filter((k) => p[k] !== undefined);
    if (sources.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message:
          sources.length === 0
            ? 'a provider needs keys: one of jwksUri, jwks or publicKeys'
            : `use exactly one of jwksUri, jwks or publicKeys (found ${sources.join(', ')})`,
      });
    }
    const configured: (string | Record<string, unknown>)[] = [
      ...(p.publicKeys ?? []).map((k) => (typeof k === 'string' ? k : k.pem)),
      ...(p.jwks?.keys ?? []),
    ];
    if (configured.length > 0 && !configured.some((k) => fitsAny(k, p.algorithms))) {
      ctx.addIssue({
        code: 'custom',
        path: ['algorithms'],
        message: `no configured key can verify ${p.algorithms.join(', ')} (e.g. an RSA key needs RS256 or PS256)`,
      });
    }
    if (p.jwksUri !== undefined && !p.allowInsecureJwksUri) {
      const url = new URL(p.jwksUri);
      if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
        ctx.addIssue({
          code: 'custom',
          path: ['jwksUri'],
          message:
            'use https (keys fetched over plain HTTP can be replaced in transit), or set allowInsecureJwksUri',
        });
      }
    }
    const c = p.jwksCache;
    if (c.timeout <= 0)
      ctx.addIssue({ code: 'custom', path: ['jwksCache', 'timeout'], message: 'must be > 0' });
    if (c.minRefreshInterval <= 0)
      ctx.addIssue({ code: 'custom', path: ['jwksCache', 'minRefreshInterval'], message: 'must be > 0' });
    if (c.minRefreshInterval > c.refreshInterval || c.refreshInterval > c.maxRefreshInterval) {
      ctx.addIssue({
        code: 'custom',
        path: ['jwksCache', 'refreshInterval'],
        message: 'expected minRefreshInterval <= refreshInterval <= maxRefreshInterval',
      });
    }
    if (c.maxStale < c.maxRefreshInterval) {
      ctx.addIssue({
        code: 'custom',
        path: ['jwksCache', 'maxStale'],
        message: 'maxStale must be at least maxRefreshInterval',
      });
    }
  });

export const AuthSchema = z.strictObject({
  /** Token issuers by name; routes refer to them by name. */
  providers: z.record(providerName, AuthProviderSchema).default({}),
});

export const AUTH_MODES = ['none', 'optional', 'required'] as const;
export type AuthMode = (typeof AUTH_MODES)[number];

export const RouteAuthSchema = z
  .strictObject({
    /** none: no check; optional: anonymous allowed, a presented token must be valid; required. */
    mode: z.enum(AUTH_MODES).default('required'),
    /** Providers accepted on this route (by name). Absent: every configured provider. */
    providers: z.array(providerName).min(1).optional(),
    /** Scopes that must all be granted (`scope` claim, space-separated, or `scp` list). */
    scopes: z.array(scopeToken).default([]),
    /** A role claim (list or string) of which at least one value must be in `anyOf`. */
    roles: z
      .strictObject({
        claim: claimPath,
        anyOf: z.array(z.string().min(1)).min(1),
      })
      .optional(),
    /** Upstream header name → claim. Values are sanitised; see docs/security.md. */
    forwardClaims: z
      .record(z.string(), claimPath)
      .default({})
      // Keys are checked here rather than by the record's key schema, whose issues say only
      // "Invalid key in record".
      .superRefine((mapping, ctx) => {
        const seen = new Set<string>();
        for (const header of Object.keys(mapping)) {
          const lower = header.toLowerCase();
          if (seen.has(lower))
            ctx.addIssue({
              code: 'custom',
              path: [header],
              message: 'header names are case-insensitive: duplicate',
            });
          seen.add(lower);
          if (!HEADER_NAME_RE.test(header))
            ctx.addIssue({ code: 'custom', path: [header], message: 'a header name' });
          else if (RESERVED_HEADERS.has(lower) || lower.startsWith('x-forwarded-')) {
            ctx.addIssue({
              code: 'custom',
              path: [header],
              message: 'this header is reserved (hop-by-hop, framing, credentials, forwarding or tracing)',
            });
          }
        }
      }),
    /** Send the client's Authorization header (and token header) upstream. Default: stripped. */
    forwardAuthorization: z.boolean().default(false),
  })
  .superRefine((a, ctx) => {
    if (a.mode !== 'required' && (a.scopes.length > 0 || a.roles !== undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: ['mode'],
        message: 'scopes and roles need mode: required',
      });
    }
  });

export type AuthConfig = z.output<typeof AuthSchema>;
export type AuthProviderConfig = AuthConfig['providers'][string];
export type JwksCacheConfig = AuthProviderConfig['jwksCache'];
export type RouteAuthConfig = z.output<typeof RouteAuthSchema>;
export type ClaimPath = string | readonly string[];

export interface RouteAuthIssue {
  path: (string | number)[];
  message: string;
}

/** checkRouteAuth against the `auth.providers` of a whole (possibly unvalidated) config. */
export function checkJwtPolicy(
  settings: unknown,
  config: Readonly<Record<string, unknown>>,
  path: (string | number)[],
  issues: RouteAuthIssue[],
): void {
  // `auth` absent means no providers; of the wrong type, references cannot be judged.
  const auth = config.auth ?? {};
  const providers = isRecord(auth) ? (auth.providers ?? {}) : undefined;
  checkRouteAuth(settings, isRecord(providers) ? providers : undefined, path, issues);
}

/**
 * Cross-checks of one JWT policy (a route's `auth`, or a named `kind: jwt` policy at `path`)
 * against `auth.providers`: named providers exist, a policy that needs a token has a provider,
 * and its providers have distinct issuers (the token's `iss` picks the provider). Reads
 * defensively: it may run on unvalidated input. `providers` undefined means the providers section
 * is unusable, so references are not judged. Issues are appended to `issues`.
 */
export function checkRouteAuth(
  routeAuth: unknown,
  providers: Record<string, unknown> | undefined,
  path: (string | number)[],
  issues: RouteAuthIssue[],
): void {
  if (!isRecord(routeAuth) || providers === undefined || routeAuth.mode === 'none') return;
  let names: string[];
  if (Array.isArray(routeAuth.providers)) {
    names = [];
    routeAuth.providers.forEach((n: unknown, j) => {
      if (typeof n !== 'string') return;
      if (!Object.hasOwn(providers, n))
        issues.push({
          path: [...path, 'providers', j],
          message: `unknown auth provider ${JSON.stringify(n)}`,
        });
      else names.push(n);
    });
  } else {
    names = Object.keys(providers);
    if (names.length === 0)
      issues.push({ path, message: 'the route needs a token but auth.providers is empty' });
  }
  const byIssuer = new Map<string, string>();
  for (const n of names) {
    const p = providers[n];
    if (!isRecord(p) || typeof p.issuer !== 'string') continue;
    const other = byIssuer.get(p.issuer);
    if (other !== undefined) {
      issues.push({
        path: Array.isArray(routeAuth.providers) ? [...path, 'providers'] : path,
        message: `providers ${other} and ${n} have the same issuer; a route picks its provider by issuer`,
      });
    } else byIssuer.set(p.issuer, n);
  }
}
