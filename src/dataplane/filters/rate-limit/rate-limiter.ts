/**
 * One rate limit policy at run time: its counters (memory or Redis), key, exemptions, cost and
 * response fields, and the decision for a request. It is the policy's state (filter.ts): built
 * once per policy and configuration, kept across reloads, and shared by every route and upstream
 * that lists the policy, so a shared policy has one budget. A route or upstream reaches it through
 * a RateLimitFilter, which adds its scope to the key when the policy says `per: route|upstream`.
 */
import type { Logger } from 'pino';
import { GatewayError } from '../../../errors.ts';
import type { RedisConnection } from '../../../stores/redis.ts';
import type { ScalarCell } from '../../../telemetry/metric-cells.ts';
import {
  RATE_LIMIT_OUTCOMES,
  type RateLimitMetrics,
  type RateLimitOutcome,
  type RateLimitStoreResult,
} from '../../../telemetry/metrics.ts';
import { addResponseHeader, type RequestContext } from '../../context.ts';
import type { PolicyState } from '../filter.ts';
import {
  type Consumed,
  type Counters,
  MemoryCounters,
  RedisCounters,
  type StoreObserver,
} from './counters.ts';
import { RateLimitFields, retryAfterOf } from './headers.ts';
import { compileExemptions, compileKey, type Exemptions, fallbackKey, type KeyFunction } from './key.ts';
import type { KeyBound } from './memory-window.ts';
import type { RateLimitConfig } from './schema.ts';

const OUTCOME = Object.fromEntries(RATE_LIMIT_OUTCOMES.map((o, i) => [o, i])) as Record<
  RateLimitOutcome,
  number
>;

/** Which decision the access log reports when several policies decide one request: the weightiest. */
const WEIGHT: Readonly<Record<string, number>> = {
  skipped: 0,
  allowed: 1,
  insured: 2,
  store_error: 3,
  dry_run_limited: 4,
  key_missing: 5,
  limited: 6,
};

/** At most one dry-run line per policy in this long; the next one carries the count since. */
const DRY_RUN_LOG_INTERVAL_MS = 10_000;

export interface RateLimiterDeps {
  readonly metrics: RateLimitMetrics;
  readonly logger: Logger;
  /** The gateway's Redis connection; Redis policies count on its rate limit connection (rateLimits()). */
  readonly redis: RedisConnection | undefined;
}

type Verdict = GatewayError | undefined;

export class RateLimiter implements PolicyState, StoreObserver {
  readonly name: string;
  readonly config: RateLimitConfig;
  readonly counters: Counters;
  readonly fields: RateLimitFields;
  readonly #key: KeyFunction;
  readonly #exemptions: Exemptions | undefined;
  readonly #ifMissing: RateLimitConfig['ifMissing'];
  readonly #costDefault: number;
  readonly #costByMethod: ReadonlyMap<string, number> | undefined;
  readonly #dryRun: boolean;
  readonly #standardHeaders: boolean;
  readonly #legacyHeaders: boolean;
  readonly #cells: readonly ScalarCell[];
  readonly #metrics: RateLimitMetrics;
  readonly #logger: Logger;
  /** The rate limits' Redis connection (Redis policies only). */
  readonly #redis: RedisConnection | undefined;
  /**
   * What a timed-out store call records on the connection: one Error per policy, not one per call
   * (its stack capture cost ~60,000 instructions under callgrind, on every request while Redis is slow).
   */
  readonly #timedOut: Error;
  /** The last store call failed: decisions are the degradation's until one succeeds. */
  #degraded = false;
  #dryRunLoggedAt = Number.NEGATIVE_INFINITY;
  #dryRunSince = 0;

  constructor(name: string, config: RateLimitConfig, deps: RateLimiterDeps) {
    this.name = name;
    this.config = config;
    this.#metrics = deps.metrics;
    this.#logger = deps.logger;
    this.#timedOut = new Error(`rate limit ${name}: store call timed out`);
    const store = config.store;
    const keyBound: KeyBound = { maxKeys: config.maxKeys, evicted: deps.metrics.evictionCell(name) };
    if (store.type === 'redis') {
      if (deps.redis === undefined)
        throw new Error(
          `rate limit policy ${name} uses Redis, but the gateway started without a redis section (static: add it and restart)`,
        );
      this.#redis = deps.redis.rateLimits();
      this.counters = new RedisCounters({
        policy: name,
        limits: config.limits,
        redis: this.#redis,
        timeoutMs: store.timeout,
        onError: store.onError,
        replicas: store.replicas ?? 1,
        keyBound,
        observer: this,
      });
      deps.metrics.addStorePolicy(name);
    } else {
      this.counters = new MemoryCounters(config.limits, keyBound);
    }
    if (store.type === 'memory' || store.onError === 'insurance') deps.metrics.watchKeys(name, this.counters);
    this.fields = new RateLimitFields(name, config.limits);
    this.#key = compileKey(config.limitBy);
    this.#exemptions = compileExemptions(config.exempt);
    this.#ifMissing = config.ifMissing;
    const cost = config.cost;
    this.#costDefault = typeof cost === 'number' ? cost : cost.default;
    const methods = typeof cost === 'number' ? {} : cost.methods;
    this.#costByMethod = Object.keys(methods).length > 0 ? new Map(Object.entries(methods)) : undefined;
    this.#dryRun = config.dryRun;
    this.#standardHeaders = config.headers.standard;
    this.#legacyHeaders = config.headers.legacy;
    this.#cells = deps.metrics.decisionCells(name);
  }

  /**
   * Decide a request under this policy, in `scope` ('' for one budget; a route or upstream name
   * for `per: route|upstream`). undefined: it may pass; a GatewayError: refuse with it (when
   * `throwing`, thrown instead: a filter's contract). Memory counters decide at once; Redis ones
   * through a Promise settling to one of the two, or, when `throwing`, to undefined or rejecting
   * with the refusal (one promise less per request than turning one into the other).
   */
  decide(ctx: RequestContext, scope: string, throwing: boolean): Verdict | Promise<Verdict> {
    if (this.#exemptions?.exempt(ctx)) return this.#skip(ctx, 'exempt');
    let key = this.#key(ctx);
    if (key === undefined) {
      if (this.#ifMissing === 'skip') return this.#skip(ctx, 'no key');
      if (this.#ifMissing === 'reject') return this.#refuseKeyless(ctx);
      key = fallbackKey(ctx);
    }
    const method = ctx.req.method ?? 'GET';
    const cost = this.#costByMethod?.get(method) ?? this.#costDefault;
    if (cost === 0) return this.#skip(ctx, 'cost 0');
    const counted = scope === '' ? key : `${scope}|${key}`;
    const counters = this.counters;
    if (counters.store === 'memory') {
      const verdict = this.#conclude(ctx, counters.count(counted, cost));
      if (throwing && verdict !== undefined) throw verdict;
      return verdict;
    }
    return counters.consume(counted, cost, (consumed) => {
      const verdict = this.#conclude(ctx, consumed);
      if (throwing && verdict !== undefined) throw verdict;
      return verdict;
    });
  }

  #conclude(ctx: RequestContext, consumed: Consumed): Verdict {
    if (consumed.degraded === 'closed') {
      this.#report(ctx, 'store_error');
      return new GatewayError('RATE_LIMIT_UNAVAILABLE', `rate limit ${this.name}: store unavailable`, {
        members: { policy: this.name },
      });
    }
    const results = consumed.results;
    let over = false;
    for (const r of results) if (r?.over) over = true;
    const outcome: RateLimitOutcome = over
      ? this.#dryRun
        ? 'dry_run_limited'
        : 'limited'
      : consumed.degraded === 'insured'
        ? 'insured'
        : consumed.degraded === 'open'
          ? 'store_error'
          : 'allowed';
    this.#report(ctx, outcome);
    // A dry run changes nothing a client sees, fields included.
    if (!this.#dryRun) {
      if (this.#standardHeaders) {
        addResponseHeader(ctx, 'ratelimit-policy', this.fields.policyField);
        const field = this.fields.rateLimitField(results);
        if (field.length > 0) addResponseHeader(ctx, 'ratelimit', field);
      }
      if (this.#legacyHeaders) {
        const legacy = this.fields.legacyFields(results);
        if (legacy !== undefined) {
          addResponseHeader(ctx, 'x-ratelimit-limit', legacy[0]);
          addResponseHeader(ctx, 'x-ratelimit-remaining', legacy[1]);
          addResponseHeader(ctx, 'x-ratelimit-reset', legacy[2]);
        }
      }
    }
    if (!over) return undefined;
    const violated: string[] = [];
    for (let i = 0; i < results.length; i++) if (results[i]?.over) violated.push(this.fields.names[i]!);
    const retryAfter = retryAfterOf(results);
    ctx.span?.addEvent('peregrine.ratelimit.limited', {
      'peregrine.ratelimit.policy': this.name,
      'peregrine.ratelimit.limits': violated,
      'peregrine.ratelimit.retry_after_s': retryAfter,
      'peregrine.ratelimit.dry_run': this.#dryRun,
    });
    if (this.#dryRun) {
      this.#logDryRun();
      return undefined;
    }
    return new GatewayError('RATE_LIMITED', `rate limit ${this.name} exceeded`, {
      headers: { 'retry-after': String(retryAfter) },
      members: { policy: this.name, 'violated-policies': violated },
    });
  }

  #skip(ctx: RequestContext, why: string): undefined {
    this.#report(ctx, 'skipped');
    if (ctx.sampled) ctx.decide('rate limit', `${this.name}: skipped (${why})`);
    return undefined;
  }

  #refuseKeyless(ctx: RequestContext): GatewayError {
    this.#report(ctx, 'key_missing');
    return new GatewayError(
      'RATE_LIMIT_KEY_MISSING',
      `rate limit ${this.name} counts requests by ${this.config.limitBy.join(' + ')}, which this request lacks`,
      { members: { policy: this.name } },
    );
  }

  /** Count the decision, and keep it for the access log when it outweighs another policy's. */
  #report(ctx: RequestContext, outcome: RateLimitOutcome): void {
    this.#cells[OUTCOME[outcome]]!.value += 1;
    const current = ctx.rateLimitOutcome;
    if (current === undefined || WEIGHT[outcome]! >= WEIGHT[current]!) {
      ctx.rateLimitPolicy = this.name;
      ctx.rateLimitOutcome = outcome;
    }
    if (ctx.sampled && outcome !== 'skipped') ctx.decide('rate limit', `${this.name}: ${outcome}`);
  }

  #logDryRun(): void {
    this.#dryRunSince++;
    const now = performance.now();
    if (now - this.#dryRunLoggedAt < DRY_RUN_LOG_INTERVAL_MS) return;
    this.#logger.info(
      { policy: this.name, wouldHaveLimited: this.#dryRunSince },
      'rate limit dry run: requests over the limit were admitted',
    );
    this.#dryRunLoggedAt = now;
    this.#dryRunSince = 0;
  }

  // StoreObserver: the Redis counters report each request's store call.
  storeCall(result: RateLimitStoreResult, seconds: number): void {
    this.#metrics.observeStore(this.name, result, seconds);
    if (result === 'timeout') this.#redis?.recordCommandError(this.#timedOut);
    const failed = result !== 'ok';
    if (failed === this.#degraded) return;
    this.#degraded = failed;
    this.#metrics.setDegraded(this.name, failed);
    const store = this.config.store;
    const onError = store.type === 'redis' ? store.onError : 'insurance';
    if (failed)
      this.#logger.warn(
        { policy: this.name, result, degradation: onError },
        `rate limit store unavailable; deciding by ${onError} until it answers`,
      );
    else this.#logger.info({ policy: this.name }, 'rate limit store answering again');
  }

  storeFailed(err: unknown): void {
    this.#redis?.recordCommandError(err);
  }

  /** The store is failing and the degradation decides (for the admin API). */
  get degraded(): boolean {
    return this.#degraded;
  }

  close(): void {
    this.#metrics.unwatchKeys(this.name, this.counters);
    this.counters.close();
  }
}
