import type { RetryReason } from '../../telemetry/metrics.ts';
import { type AttemptOutcome, isClientSide } from '../forward/upstream-errors.ts';
import type { Random } from './clock.ts';
import type { Endpoint } from './endpoint.ts';
import type { RetryCondition, RetryConfig } from './policy-schema.ts';

/** RFC 9110 §9.2.2: repeating these has the same effect as sending them once. */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set([
  'GET',
  'HEAD',
  'OPTIONS',
  'TRACE',
  'PUT',
  'DELETE',
]);

export type { RetryReason };

/** Why an attempt was not retried. */
export type NoRetryReason =
  | 'disabled'
  | 'max_attempts'
  | 'not_retryable'
  | 'response_started'
  | 'non_idempotent'
  | 'body_not_replayable'
  | 'no_other_endpoint'
  | 'circuit_open'
  | 'retry_after_too_long'
  | 'deadline'
  | 'budget_exhausted';

export type RetryDecision =
  | { readonly retry: true; readonly delayMs: number; readonly reason: RetryReason }
  | { readonly retry: false; readonly reason: NoRetryReason };

/** What the pipeline knows about the attempt that just failed. */
export interface RetryInput {
  /** Attempts made so far, this one included (1 after the first). */
  readonly attempt: number;
  readonly method: string;
  readonly outcome: AttemptOutcome;
  /** The upstream's status, 0 when no response head arrived. */
  readonly status: number;
  /**
   * Whether any byte of the request may have reached the upstream: false only when the attempt
   * failed before undici started writing it (no connection, or still queued in the pool).
   */
  readonly bytesSent: boolean;
  /** Whether any byte of the request body was written (a stale connection's retry reads it). */
  readonly bodySent?: boolean | undefined;
  /** No body, or a body buffered in full (≤ retries.bufferBody) that can be sent again. */
  readonly bodyReplayable: boolean;
  /** The upstream's Retry-After, in ms (see parseRetryAfter). */
  readonly retryAfterMs?: number | undefined;
  /** Time since the request's first attempt started. */
  readonly elapsedMs: number;
  /** The endpoints this request has tried: a TLS failure is retried only on another one. */
  readonly tried?: readonly Endpoint[] | undefined;
}

const NO: { readonly [R in NoRetryReason]: RetryDecision } = {
  disabled: { retry: false, reason: 'disabled' },
  max_attempts: { retry: false, reason: 'max_attempts' },
  not_retryable: { retry: false, reason: 'not_retryable' },
  response_started: { retry: false, reason: 'response_started' },
  non_idempotent: { retry: false, reason: 'non_idempotent' },
  body_not_replayable: { retry: false, reason: 'body_not_replayable' },
  no_other_endpoint: { retry: false, reason: 'no_other_endpoint' },
  circuit_open: { retry: false, reason: 'circuit_open' },
  retry_after_too_long: { retry: false, reason: 'retry_after_too_long' },
  deadline: { retry: false, reason: 'deadline' },
  budget_exhausted: { retry: false, reason: 'budget_exhausted' },
};

const STALE_RETRY: RetryDecision = { retry: true, delayMs: 0, reason: 'stale_connection' };

const CONDITION_OF: { readonly [R in Exclude<RetryReason, 'status' | 'stale_connection'>]: RetryCondition } =
  {
    connect_failure: 'connect-failure',
    refused: 'refused',
    reset: 'reset',
    timeout: 'timeout',
  };

/**
 * Which kind of retryable failure an attempt is, or undefined when it is none: a response was
 * relayed (or is being relayed), or the client is what failed (went away, held the exchange up,
 * sent an invalid body). A TLS failure during the connect is a connect failure.
 */
export function failureKind(
  outcome: AttemptOutcome,
  status: number,
  bytesSent: boolean,
  statuses: ReadonlySet<number>,
): Exclude<RetryReason, 'stale_connection'> | 'response_started' | undefined {
  if (outcome === 'success') return statuses.has(status) ? 'status' : undefined;
  if (isClientSide(outcome)) return undefined;
  // The head arrived and the body failed: the client already has the head.
  if (status !== 0) return 'response_started';
  if (outcome === 'connect_error' || (outcome === 'tls_error' && !bytesSent)) return 'connect_failure';
  if (!bytesSent) return outcome === 'timeout' ? 'connect_failure' : 'refused';
  return outcome === 'timeout' ? 'timeout' : 'reset';
}

/** Full-jitter exponential backoff: uniform in [0, min(max, base × 2^(retry-1))]. */
export function backoffDelay(retry: number, baseMs: number, maxMs: number, random: Random): number {
  const bound = Math.min(maxMs, baseMs * 2 ** (retry - 1));
  return Math.floor(random() * (bound + 1));
}

/**
 * Retry-After (RFC 9110 §10.2.3) in ms: delay-seconds or an HTTP-date. undefined when absent or
 * invalid; a date in the past is 0.
 */
export function parseRetryAfter(
  value: string | string[] | undefined,
  nowMs = Date.now(),
): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined) return undefined;
  const text = v.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  if (Number.isNaN(at) || !/[A-Za-z]/.test(text)) return undefined;
  return Math.max(0, at - nowMs);
}

/** The local parts of the budget, breaker and balancer that a decision consults. */
export interface RetryGates {
  circuitOpen(): boolean;
  tryWithdraw(): boolean;
  /** Whether an eligible endpoint outside `tried` exists. */
  otherEndpoint(tried: readonly Endpoint[] | undefined): boolean;
}

/**
 * The retry rules of one upstream, compiled once. `decide` goes from cheap, request-local checks
 * to the shared ones, and withdraws from the budget only when everything else says yes.
 */
export class RetryPolicy {
  readonly maxAttempts: number;
  readonly statuses: ReadonlySet<number>;
  readonly bufferBody: number;
  readonly #conditions: ReadonlySet<RetryCondition>;
  readonly #baseMs: number;
  readonly #maxMs: number;
  readonly #maxRetryAfterMs: number;
  readonly #totalTimeoutMs: number;
  readonly #random: Random;

  constructor(cfg: RetryConfig, totalTimeoutMs: number, random: Random) {
    this.maxAttempts = cfg.maxAttempts;
    this.statuses = new Set(cfg.statuses);
    this.bufferBody = cfg.bufferBody;
    this.#conditions = new Set(cfg.retryOn);
    this.#baseMs = cfg.backoff.base;
    this.#maxMs = Math.max(cfg.backoff.base, cfg.backoff.max);
    this.#maxRetryAfterMs = cfg.maxRetryAfter;
    this.#totalTimeoutMs = totalTimeoutMs;
    this.#random = random;
  }

  decide(input: RetryInput, gates: RetryGates): RetryDecision {
    if (input.outcome === 'stale_connection') return this.#decideStale(input, gates);
    if (this.maxAttempts <= 1) return NO.disabled;
    if (input.attempt >= this.maxAttempts) return NO.max_attempts;
    const kind = failureKind(input.outcome, input.status, input.bytesSent, this.statuses);
    if (kind === undefined) return NO.not_retryable;
    if (kind === 'response_started') return NO.response_started;
    if (kind !== 'status' && !this.#conditions.has(CONDITION_OF[kind])) return NO.not_retryable;
    // A non-idempotent request is repeated only when it provably never reached the upstream.
    if (!IDEMPOTENT_METHODS.has(input.method) && (input.bytesSent || kind === 'status'))
      return NO.non_idempotent;
    if (!input.bodyReplayable) return NO.body_not_replayable;
    // A refused certificate or a failed handshake will fail the same way on the same endpoint.
    if (input.outcome === 'tls_error' && !gates.otherEndpoint(input.tried)) return NO.no_other_endpoint;
    if (gates.circuitOpen()) return NO.circuit_open;
    let delayMs = backoffDelay(input.attempt, this.#baseMs, this.#maxMs, this.#random);
    if (input.retryAfterMs !== undefined) {
      if (input.retryAfterMs > this.#maxRetryAfterMs) return NO.retry_after_too_long;
      delayMs = Math.max(delayMs, input.retryAfterMs);
    }
    if (this.#totalTimeoutMs > 0 && input.elapsedMs + delayMs >= this.#totalTimeoutMs) return NO.deadline;
    if (!gates.tryWithdraw()) return NO.budget_exhausted;
    return { retry: true, delayMs, reason: kind };
  }

  /**
   * A request that failed on a stale pooled connection (the endpoint had closed it idle) goes out
   * again at once, on a fresh connection to the same endpoint: a transport replay, as HTTP/1.1
   * clients do (RFC 9112 §9.3.1), not a policy retry, so neither `maxAttempts`, `retryOn` nor the
   * budget apply; it is made once per request (the forwarder's outcome says so). Safe only when the
   * endpoint cannot have acted on the request: an idempotent method, or no body byte written.
   */
  #decideStale(input: RetryInput, gates: RetryGates): RetryDecision {
    if (!IDEMPOTENT_METHODS.has(input.method) && input.bodySent !== false) return NO.non_idempotent;
    if (!input.bodyReplayable) return NO.body_not_replayable;
    if (gates.circuitOpen()) return NO.circuit_open;
    if (this.#totalTimeoutMs > 0 && input.elapsedMs >= this.#totalTimeoutMs) return NO.deadline;
    return STALE_RETRY;
  }
}
