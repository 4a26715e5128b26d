/**
 * A remote key set that survives rotation and outages.
 *
 * - Fetched at start (`start()`), then refreshed in the background at 90% of its freshness
 *   lifetime: the response's Cache-Control max-age clamped to [minRefreshInterval,
 *   maxRefreshInterval], or refreshInterval without one. Timers are unref()ed.
 * - All fetches are single-flight: whoever needs keys while a fetch runs waits on that fetch.
 * - A token naming an unknown kid may start a refetch, at most one per minRefetchInterval
 *   (counted from the start of the last fetch of any kind); otherwise it is refused at once.
 * - A failed fetch keeps the last good key set (stale-if-error) until it is older than maxStale
 *   (measured from the last time the endpoint confirmed it); then the set is dropped and
 *   verification fails closed. Failed fetches are retried in the background with backoff from
 *   min(1s, minRefetchInterval) up to minRefetchInterval.
 * - A request waits at most one fetch: `timeout` (connect + headers + body), plus key import.
 *
 * The clock and the fetcher are injectable, so unit tests drive this with fake timers.
 */
import type { JwksFetchOutcome } from '../../../telemetry/metrics.ts';
import { JwksFetchError, type JwksFetcher } from './jwks-fetch.ts';
import { type KeySet, KeySetError } from './key-set.ts';
import type { JwksCacheConfig } from './schema.ts';

/** Share of the freshness lifetime after which the background refresh runs. */
const REFRESH_AT = 0.9;
const RETRY_BASE_MS = 1000;

export interface JwksCacheOptions {
  readonly fetcher: JwksFetcher;
  /** Import a fetched document; throws (KeySetError) when it holds no usable key. */
  readonly build: (doc: unknown) => Promise<KeySet>;
  readonly config: JwksCacheConfig;
  /** ms since the epoch; Date.now by default. */
  readonly now?: () => number;
  /** The key set in use changed (a new set, or undefined when it expired past maxStale). */
  readonly onKeySet?: (next: KeySet | undefined, previous: KeySet | undefined) => void;
  /** A fetch finished; `error` is a short safe description for failures. */
  readonly onFetch?: (outcome: JwksFetchOutcome, error: string | undefined) => void;
}

export interface JwksCacheStatus {
  readonly keys: number;
  readonly kids: readonly string[];
  /** When the endpoint last confirmed the key set in use (200 or 304), ms since the epoch. */
  readonly confirmedAt: number | undefined;
  /** Past this the key set is stale (its max-age passed without a successful refresh). */
  readonly staleAfter: number;
  readonly stale: boolean;
  /** The key set is dropped past this (maxStale). */
  readonly usableUntil: number;
  readonly lastFetch: { readonly at: number; readonly outcome: JwksFetchOutcome } | undefined;
  readonly lastError: { readonly at: number; readonly message: string } | undefined;
  readonly nextRefreshAt: number | undefined;
  readonly fetching: boolean;
}

export class JwksCache {
  readonly #fetcher: JwksFetcher;
  readonly #build: (doc: unknown) => Promise<KeySet>;
  readonly #cfg: JwksCacheConfig;
  readonly #now: () => number;
  readonly #onKeySet: JwksCacheOptions['onKeySet'];
  readonly #onFetch: JwksCacheOptions['onFetch'];

  #keySet: KeySet | undefined = undefined;
  #confirmedAt: number | undefined = undefined;
  #ttl: number;
  #etag: string | undefined = undefined;
  #inflight: Promise<void> | undefined = undefined;
  #lastStart = Number.NEGATIVE_INFINITY;
  #failures = 0;
  #timer: NodeJS.Timeout | undefined = undefined;
  #nextRefreshAt: number | undefined = undefined;
  #lastFetch: { at: number; outcome: JwksFetchOutcome } | undefined = undefined;
  #lastError: { at: number; message: string } | undefined = undefined;
  #started: Promise<void> | undefined = undefined;
  #closed = false;

  constructor(opts: JwksCacheOptions) {
    this.#fetcher = opts.fetcher;
    this.#build = opts.build;
    this.#cfg = opts.config;
    this.#now = opts.now ?? Date.now;
    this.#onKeySet = opts.onKeySet;
    this.#onFetch = opts.onFetch;
    this.#ttl = opts.config.refreshInterval;
  }

  /** The key set in use, or undefined when there is none or it is older than maxStale. */
  current(): KeySet | undefined {
    const ks = this.#keySet;
    if (ks !== undefined && this.#now() > this.usableUntil()) this.#expire();
    return this.#keySet;
  }

  /** Time after which the key set may no longer be used (ms since the epoch). */
  usableUntil(): number {
    return this.#confirmedAt === undefined
      ? Number.NEGATIVE_INFINITY
      : this.#confirmedAt + this.#cfg.maxStale;
  }

  /** The first fetch, once; resolves when it finished either way. Never rejects. */
  start(): Promise<void> {
    if (this.#started === undefined) this.#started = this.#closed ? Promise.resolve() : this.refresh();
    return this.#started;
  }

  /** Has a fetch (successful or not) finished since start? */
  get attempted(): boolean {
    return this.#lastFetch !== undefined;
  }

  /** Fetch now, or join the fetch in flight. Never rejects. */
  refresh(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (this.#inflight !== undefined) return this.#inflight;
    this.#lastStart = this.#now();
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#nextRefreshAt = undefined;
    }
    // #fetchOnce handles every fetch and import failure; the catch is for a throwing callback,
    // which must neither reject the requests waiting here nor crash a timer.
    const run = this.#fetchOnce()
      .catch(() => undefined)
      .finally(() => {
        this.#inflight = undefined;
      });
    this.#inflight = run;
    return run;
  }

  /**
   * For a token whose kid is unknown (or when there are no keys): the fetch in flight, a new one if
   * the last fetch started at least minRefetchInterval ago, or undefined (rate-limited: the caller
   * answers at once).
   */
  refetch(): Promise<void> | undefined {
    if (this.#closed) return undefined;
    if (this.#inflight !== undefined) return this.#inflight;
    if (this.#now() - this.#lastStart < this.#cfg.minRefetchInterval) return undefined;
    return this.refresh();
  }

  status(): JwksCacheStatus {
    const ks = this.current();
    const staleAfter = this.#staleAfter();
    return {
      keys: ks?.size ?? 0,
      kids: ks?.kids ?? [],
      confirmedAt: this.#confirmedAt,
      staleAfter,
      stale: ks !== undefined && this.#now() > staleAfter,
      usableUntil: this.usableUntil(),
      lastFetch: this.#lastFetch,
      lastError: this.#lastError,
      nextRefreshAt: this.#nextRefreshAt,
      fetching: this.#inflight !== undefined,
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#nextRefreshAt = undefined;
  }

  #staleAfter(): number {
    return this.#confirmedAt === undefined || this.#keySet === undefined
      ? Number.POSITIVE_INFINITY
      : this.#confirmedAt + this.#ttl;
  }

  async #fetchOnce(): Promise<void> {
    let outcome: JwksFetchOutcome;
    let error: string | undefined;
    try {
      const res = await this.#fetcher.fetch(this.#keySet === undefined ? undefined : this.#etag);
      if (this.#closed) return;
      if (res.outcome === 'not_modified' && this.#keySet !== undefined) {
        outcome = 'not_modified';
        this.#confirm(res.maxAge);
      } else {
        const next = await this.#build(res.body);
        if (this.#closed) return;
        const previous = this.#keySet;
        this.#keySet = next;
        this.#etag = res.etag;
        outcome = 'success';
        this.#confirm(res.maxAge);
        this.#onKeySet?.(next, previous);
      }
      this.#failures = 0;
      this.#schedule(Math.max(1, Math.round(this.#ttl * REFRESH_AT)));
    } catch (err) {
      if (this.#closed) return;
      outcome = err instanceof JwksFetchError ? err.outcome : 'invalid';
      error = err instanceof JwksFetchError || err instanceof KeySetError ? err.message : 'unexpected error';
      this.#failures++;
      this.#lastError = { at: this.#now(), message: error };
      const base = Math.min(RETRY_BASE_MS, this.#cfg.minRefetchInterval);
      const cap = Math.max(this.#cfg.minRefetchInterval, base);
      this.#schedule(Math.max(1, Math.min(base * 2 ** (this.#failures - 1), cap)));
      // Keys past maxStale go now, not at the next request.
      this.current();
    }
    this.#lastFetch = { at: this.#now(), outcome };
    this.#onFetch?.(outcome, error);
  }

  #confirm(maxAge: number | undefined): void {
    const c = this.#cfg;
    this.#confirmedAt = this.#now();
    this.#ttl =
      maxAge === undefined
        ? c.refreshInterval
        : Math.min(Math.max(maxAge, c.minRefreshInterval), c.maxRefreshInterval);
  }

  #expire(): void {
    const previous = this.#keySet;
    this.#keySet = undefined;
    this.#etag = undefined;
    this.#onKeySet?.(undefined, previous);
  }

  #schedule(delay: number): void {
    if (this.#closed) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#nextRefreshAt = this.#now() + delay;
    const timer = setTimeout(() => {
      this.#timer = undefined;
      this.#nextRefreshAt = undefined;
      void this.refresh();
    }, delay);
    timer.unref?.();
    this.#timer = timer;
  }
}
