/**
 * One token issuer: its keys (a remote JWKS behind a JwksCache, or keys from the configuration),
 * the jose verification options derived from its config once, and its cache of verified tokens.
 * Providers are shared by every route that accepts them and survive reloads that leave their
 * config unchanged (providers.ts), keys and token cache included.
 */
import { errors, type JWTVerifyOptions, jwtVerify } from 'jose';
import type { Logger } from 'pino';
import type { GatewayMetrics, JwksFetchOutcome } from '../../../telemetry/metrics.ts';
import { JwksCache } from './jwks-cache.ts';
import { createHttpJwksFetcher, type JwksFetcher } from './jwks-fetch.ts';
import { buildKeySet, jwksFromPem, type KeySet, type VerificationKey } from './key-set.ts';
import type { TokenFailure, VerifyFailure } from './reasons.ts';
import type { AuthProviderConfig } from './schema.ts';
import type { InspectedToken } from './token.ts';
import { TokenCache, type VerifiedToken } from './token-cache.ts';

export interface AuthProviderDeps {
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  /** ms since the epoch; Date.now by default. */
  readonly now?: () => number;
  /** Replaces the HTTP fetcher of a jwksUri provider (tests). */
  readonly fetcher?: JwksFetcher;
  /** providerFingerprint(config), when the caller has computed it already (a reload has). */
  readonly fingerprint?: string;
}

/** The config as one string: a reload keeps a provider (keys, token cache) when it is unchanged. */
export function providerFingerprint(config: AuthProviderConfig): string {
  return JSON.stringify(config);
}

/** The admin view of a provider (/v1/auth). Times are ISO strings. */
export interface AuthProviderStatus {
  readonly name: string;
  readonly issuer: string;
  readonly source: 'jwksUri' | 'jwks' | 'publicKeys';
  /** The configured URI without credentials. */
  readonly jwksUri: string | undefined;
  readonly algorithms: readonly string[];
  /** Has usable keys. */
  readonly ready: boolean;
  readonly keys: number;
  readonly kids: readonly string[];
  /** Serving keys past their max-age because refreshes fail (stale-if-error). */
  readonly stale: boolean;
  readonly keysetAgeSeconds: number | undefined;
  readonly confirmedAt: string | undefined;
  /** The key set is dropped (and verification fails closed) after this, unless a refresh succeeds. */
  readonly usableUntil: string | undefined;
  readonly lastFetch: { readonly at: string; readonly outcome: JwksFetchOutcome } | undefined;
  readonly lastError: { readonly at: string; readonly message: string } | undefined;
  readonly nextRefreshAt: string | undefined;
  readonly cachedTokens: number;
}

/** The provider whose values a provider name's JWKS gauges show (a reload may briefly run two). */
const gaugeOwners = new WeakMap<GatewayMetrics, Map<string, AuthProvider>>();

function iso(ms: number | undefined): string | undefined {
  return ms === undefined || !Number.isFinite(ms) ? undefined : new Date(ms).toISOString();
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const k of Object.keys(v)) deepFreeze((v as Record<string, unknown>)[k]);
  }
  return v;
}

/** jose's error → the decision reason. Only codes are read, never messages. */
export function reasonOf(err: unknown): TokenFailure {
  if (!(err instanceof errors.JOSEError)) return 'malformed';
  switch (err.code) {
    case 'ERR_JWT_EXPIRED':
      return 'expired';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED': {
      const { claim, reason } = err as errors.JWTClaimValidationFailed;
      if (reason === 'missing') return 'missing_claim';
      switch (claim) {
        case 'nbf':
          return 'not_yet_valid';
        case 'iss':
          return 'wrong_issuer';
        case 'aud':
          return 'wrong_audience';
        case 'typ':
          return 'wrong_type';
        default:
          return 'malformed';
      }
    }
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return 'bad_signature';
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return 'algorithm_not_allowed';
    case 'ERR_JOSE_NOT_SUPPORTED':
      return 'forbidden_header';
    default:
      return 'malformed';
  }
}

export class AuthProvider {
  readonly name: string;
  readonly config: AuthProviderConfig;
  /** providerFingerprint(config): a reload keeps the provider when this is unchanged. */
  readonly fingerprint: string;
  readonly issuer: string;
  readonly algorithms: ReadonlySet<string>;
  readonly maxTokenSize: number;
  readonly tokenCache: TokenCache;
  /**
   * Cached verifications are served only before this time (ms since the epoch): keys from the
   * configuration never expire; a remote key set is dropped maxStale after its last confirmation.
   */
  usableUntil = Number.NEGATIVE_INFINITY;
  /** The clock (ms since the epoch) this provider and the filters using it read. */
  readonly now: () => number;

  readonly #metrics: GatewayMetrics;
  readonly #log: Logger;
  readonly #options: JWTVerifyOptions;
  readonly #toleranceMs: number;
  readonly #remote: JwksCache | undefined;
  readonly #fetcher: JwksFetcher | undefined;
  #static: KeySet | undefined = undefined;
  #staticLoad: Promise<void> | undefined = undefined;
  #staticError: { at: number; message: string } | undefined = undefined;
  /** Verifications in flight by token: a burst of requests with a new token verifies it once. */
  readonly #pending = new Map<string, Promise<VerifiedToken | VerifyFailure>>();
  #closed = false;

  constructor(name: string, config: AuthProviderConfig, deps: AuthProviderDeps) {
    this.name = name;
    this.config = config;
    this.fingerprint = deps.fingerprint ?? providerFingerprint(config);
    this.issuer = config.issuer;
    this.algorithms = new Set(config.algorithms);
    this.maxTokenSize = config.maxTokenSize;
    this.tokenCache = new TokenCache(config.tokenCache.maxEntries);
    this.#metrics = deps.metrics;
    this.#log = deps.logger.child({ component: 'auth', provider: name });
    this.now = deps.now ?? Date.now;
    this.#toleranceMs = config.clockTolerance;
    this.#options = {
      algorithms: [...config.algorithms],
      issuer: config.issuer,
      audience: config.audiences,
      requiredClaims: ['exp', ...config.requiredClaims],
      clockTolerance: Math.floor(config.clockTolerance / 1000),
      typ: config.requiredType,
    };
    let owners = gaugeOwners.get(deps.metrics);
    if (owners === undefined) {
      owners = new Map();
      gaugeOwners.set(deps.metrics, owners);
    }
    owners.set(name, this);
    if (config.jwksUri !== undefined) {
      const cache = config.jwksCache;
      this.#fetcher =
        deps.fetcher ??
        createHttpJwksFetcher(config.jwksUri, {
          timeout: cache.timeout,
          maxResponseSize: cache.maxResponseSize,
        });
      this.#remote = new JwksCache({
        fetcher: this.#fetcher,
        build: (doc) => buildKeySet(doc, config.algorithms),
        config: cache,
        now: this.now,
        onKeySet: (next, previous) => this.#keySetChanged(next, previous),
        onFetch: (outcome, error) => this.#fetched(outcome, error),
      });
    }
    this.#publishGauges();
  }

  /** Has usable keys (readiness). */
  get ready(): boolean {
    return this.#remote !== undefined ? this.#remote.current() !== undefined : this.#static !== undefined;
  }

  /** Load keys: the first JWKS fetch, or the import of configured keys. Never rejects. */
  start(): Promise<void> {
    if (this.#remote !== undefined) return this.#remote.start();
    return this.#loadStatic();
  }

  /** A cached verification of `token`, if one may still be served at `now`. */
  cached(token: string, now: number): VerifiedToken | undefined {
    if (now >= this.usableUntil) return undefined;
    return this.tokenCache.get(token, now);
  }

  /**
   * Verify a token the filter has inspected and attributed to this provider (its unverified `iss`
   * is this issuer). Resolves to the verified token or the reason for refusing it; never rejects.
   */
  verify(token: string, inspected: InspectedToken): Promise<VerifiedToken | VerifyFailure> {
    let pending = this.#pending.get(token);
    if (pending === undefined) {
      pending = this.#verifyUncached(token, inspected).finally(() => this.#pending.delete(token));
      this.#pending.set(token, pending);
    }
    return pending;
  }

  status(): AuthProviderStatus {
    const cfg = this.config;
    const base = {
      name: this.name,
      issuer: this.issuer,
      source: cfg.jwksUri !== undefined ? 'jwksUri' : cfg.jwks !== undefined ? 'jwks' : 'publicKeys',
      // Credentials in the URI are redacted by the admin API, like every view it shows.
      jwksUri: cfg.jwksUri,
      algorithms: cfg.algorithms,
      cachedTokens: this.tokenCache.size,
    } as const;
    if (this.#remote === undefined) {
      const ks = this.#static;
      return {
        ...base,
        ready: ks !== undefined,
        keys: ks?.size ?? 0,
        kids: ks?.kids ?? [],
        stale: false,
        keysetAgeSeconds: undefined,
        confirmedAt: undefined,
        usableUntil: undefined,
        lastFetch: undefined,
        lastError:
          this.#staticError === undefined
            ? undefined
            : { at: iso(this.#staticError.at)!, message: this.#staticError.message },
        nextRefreshAt: undefined,
      };
    }
    const s = this.#remote.status();
    const now = this.now();
    return {
      ...base,
      ready: s.keys > 0,
      keys: s.keys,
      kids: s.kids,
      stale: s.stale,
      keysetAgeSeconds:
        s.confirmedAt === undefined || s.keys === 0 ? undefined : (now - s.confirmedAt) / 1000,
      confirmedAt: iso(s.confirmedAt),
      usableUntil: s.keys === 0 ? undefined : iso(s.usableUntil),
      lastFetch:
        s.lastFetch === undefined ? undefined : { at: iso(s.lastFetch.at)!, outcome: s.lastFetch.outcome },
      lastError:
        s.lastError === undefined ? undefined : { at: iso(s.lastError.at)!, message: s.lastError.message },
      nextRefreshAt: iso(s.nextRefreshAt),
    };
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#remote?.close();
    void this.#fetcher?.close();
    this.tokenCache.clear();
    this.usableUntil = Number.NEGATIVE_INFINITY;
    const owners = gaugeOwners.get(this.#metrics);
    if (owners?.get(this.name) === this) {
      owners.delete(this.name);
      this.#metrics.forgetJwksProvider(this.name);
    }
  }

  async #verifyUncached(token: string, t: InspectedToken): Promise<VerifiedToken | VerifyFailure> {
    let ks = await this.#keySet();
    if (ks === undefined) return 'jwks_unavailable';
    let candidates = ks.lookup(t.alg, t.kid);
    if (candidates === undefined) {
      // A kid the set holds under another algorithm: the signature cannot be valid; no refetch.
      if (t.kid !== undefined && ks.hasKid(t.kid)) return 'bad_signature';
      if (this.#remote !== undefined && t.kid !== undefined) {
        this.#metrics.recordJwksKidMiss(this.name);
        // Only a token that could pass once its key is known may cost a refetch.
        if (this.#plausible(t.payload)) {
          const refetch = this.#remote.refetch();
          if (refetch !== undefined) {
            await refetch;
            ks = this.#remote.current();
            candidates = ks?.lookup(t.alg, t.kid);
          }
        }
      }
      if (candidates === undefined) return ks === undefined ? 'jwks_unavailable' : 'unknown_kid';
    }
    return this.#verifyWith(token, candidates);
  }

  async #verifyWith(
    token: string,
    candidates: readonly VerificationKey[],
  ): Promise<VerifiedToken | VerifyFailure> {
    let failure: VerifyFailure = 'bad_signature';
    for (const k of candidates) {
      let payload: Record<string, unknown>;
      try {
        ({ payload } = await jwtVerify(token, k.key, {
          ...this.#options,
          currentDate: new Date(this.now()),
        }));
      } catch (err) {
        failure = reasonOf(err);
        // Past the signature, a claim failure is final; a signature failure tries the next key.
        if (failure !== 'bad_signature') return failure;
        continue;
      }
      const verified: VerifiedToken = {
        claims: deepFreeze(payload),
        subject: typeof payload.sub === 'string' ? payload.sub : undefined,
        expiresAt: (payload.exp as number) * 1000,
        fingerprint: k.fingerprint,
        scopes: undefined,
      };
      // Not cached when the key left the set while jose worked (a rotation sweep already ran).
      const current = this.#remote !== undefined ? this.#remote.current() : this.#static;
      if (current?.fingerprints.has(k.fingerprint)) this.tokenCache.set(token, verified, this.now());
      return verified;
    }
    return failure;
  }

  /** Keys to verify with; waits for the fetch in flight (or starts one, rate-limited) when there are none. */
  async #keySet(): Promise<KeySet | undefined> {
    if (this.#remote === undefined) {
      if (this.#static === undefined) await this.#loadStatic();
      return this.#static;
    }
    const ks = this.#remote.current();
    if (ks !== undefined) return ks;
    const fetching = this.#remote.refetch();
    if (fetching === undefined) return undefined;
    await fetching;
    return this.#remote.current();
  }

  #plausible(claims: Readonly<Record<string, unknown>>): boolean {
    const exp = claims.exp;
    return typeof exp === 'number' && exp * 1000 > this.now() - this.#toleranceMs;
  }

  #loadStatic(): Promise<void> {
    if (this.#staticLoad === undefined) {
      const cfg = this.config;
      this.#staticLoad = (async () => {
        try {
          const doc = cfg.jwks ?? jwksFromPem(cfg.publicKeys ?? []);
          const ks = await buildKeySet(doc, cfg.algorithms);
          if (this.#closed) return;
          this.#static = ks;
          this.usableUntil = Number.POSITIVE_INFINITY;
          if (ks.skipped > 0) this.#log.warn({ skipped: ks.skipped }, 'configured keys skipped (unusable)');
        } catch (err) {
          const message = err instanceof Error ? err.message : 'unusable keys';
          this.#staticError = { at: this.now(), message };
          this.#log.error({ error: message }, 'configured keys unusable; the provider is not ready');
        }
        this.#publishGauges();
      })();
    }
    return this.#staticLoad;
  }

  #keySetChanged(next: KeySet | undefined, previous: KeySet | undefined): void {
    if (next === undefined) {
      this.tokenCache.clear();
      this.usableUntil = Number.NEGATIVE_INFINITY;
      this.#log.error(
        { maxStale: this.config.jwksCache.maxStale },
        'JWKS key set older than maxStale dropped; tokens are refused until a fetch succeeds',
      );
    } else {
      this.tokenCache.retain(next.fingerprints);
      const before = new Set(previous?.kids ?? []);
      const added = next.kids.filter((k) => !before.has(k));
      const removed = previous?.kids.filter((k) => !next.hasKid(k)) ?? [];
      if (previous === undefined || added.length > 0 || removed.length > 0) {
        this.#log.info(
          { keys: next.size, kids: next.kids, added, removed, skipped: next.skipped },
          'JWKS key set loaded',
        );
      }
    }
    this.#publishGauges();
  }

  #fetched(outcome: JwksFetchOutcome, error: string | undefined): void {
    this.#metrics.recordJwksFetch(this.name, outcome);
    if (this.#remote !== undefined)
      this.usableUntil = this.#remote.current() ? this.#remote.usableUntil() : Number.NEGATIVE_INFINITY;
    if (error !== undefined) {
      const has = this.#remote?.current() !== undefined;
      this.#log.warn(
        { outcome, error },
        has ? 'JWKS fetch failed; serving the last good key set' : 'JWKS fetch failed; no keys yet',
      );
    }
    this.#publishGauges();
  }

  #publishGauges(): void {
    if (gaugeOwners.get(this.#metrics)?.get(this.name) !== this) return;
    if (this.#remote === undefined) {
      this.#metrics.setJwksKeyset(this.name, this.#static?.size ?? 0, undefined, Number.POSITIVE_INFINITY);
      return;
    }
    const s = this.#remote.status();
    this.#metrics.setJwksKeyset(this.name, s.keys, s.keys > 0 ? s.confirmedAt : undefined, s.staleAfter);
  }
}
