import { describe, expect, it } from 'vitest';
import type { AttemptOutcome } from '../../../src/dataplane/forward/upstream-errors.ts';
import { RetrySchema } from '../../../src/dataplane/upstream/policy-schema.ts';
import {
  backoffDelay,
  failureKind,
  parseRetryAfter,
  type RetryGates,
  type RetryInput,
  RetryPolicy,
} from '../../../src/dataplane/upstream/retry-policy.ts';

const open: RetryGates = { circuitOpen: () => false, tryWithdraw: () => true, otherEndpoint: () => true };

function policy(cfg: Record<string, unknown> = {}, total = 30_000, random = () => 0.5): RetryPolicy {
  return new RetryPolicy(RetrySchema.parse(cfg), total, random);
}

function input(over: Partial<RetryInput> = {}): RetryInput {
  return {
    attempt: 1,
    method: 'GET',
    outcome: 'connect_error',
    status: 0,
    bytesSent: false,
    bodyReplayable: true,
    elapsedMs: 10,
    ...over,
  };
}

describe('failureKind', () => {
  const none = new Set<number>();
  const s503 = new Set([503]);
  it.each([
    ['connect_error', 0, false, none, 'connect_failure'],
    ['timeout', 0, false, none, 'connect_failure'],
    ['reset', 0, false, none, 'refused'],
    ['other', 0, false, none, 'refused'],
    ['reset', 0, true, none, 'reset'],
    ['protocol_error', 0, true, none, 'reset'],
    ['timeout', 0, true, none, 'timeout'],
    ['reset', 200, true, none, 'response_started'],
    ['success', 503, true, s503, 'status'],
    ['success', 503, true, none, undefined],
    ['success', 200, true, s503, undefined],
    ['client_abort', 0, true, none, undefined],
    ['client_timeout', 0, true, none, undefined],
    ['client_timeout', 200, true, none, undefined],
    ['client_error', 0, true, none, undefined],
    ['tls_error', 0, false, none, 'connect_failure'],
  ] as const)('%s status %i bytesSent %s → %s', (outcome, status, sent, statuses, kind) => {
    expect(failureKind(outcome as AttemptOutcome, status, sent, statuses)).toBe(kind);
  });
});

describe('RetryPolicy.decide', () => {
  it.each([
    // [what, policy config, input, expected retry, expected reason]
    ['connect failure, GET', {}, {}, true, 'connect_failure'],
    ['connect failure, POST (nothing was sent)', {}, { method: 'POST' }, true, 'connect_failure'],
    ['refused before writing, POST', {}, { method: 'POST', outcome: 'reset' }, true, 'refused'],
    ['reset after sending, GET', {}, { outcome: 'reset', bytesSent: true }, true, 'reset'],
    [
      'reset after sending, POST',
      {},
      { method: 'POST', outcome: 'reset', bytesSent: true },
      false,
      'non_idempotent',
    ],
    [
      'reset after sending, PATCH',
      {},
      { method: 'PATCH', outcome: 'reset', bytesSent: true },
      false,
      'non_idempotent',
    ],
    [
      'reset after sending, PUT (idempotent)',
      {},
      { method: 'PUT', outcome: 'reset', bytesSent: true },
      true,
      'reset',
    ],
    [
      'reset after sending, DELETE',
      {},
      { method: 'DELETE', outcome: 'reset', bytesSent: true },
      true,
      'reset',
    ],
    [
      'per-try timeout, not in retryOn by default',
      {},
      { outcome: 'timeout', bytesSent: true },
      false,
      'not_retryable',
    ],
    [
      'per-try timeout, enabled',
      { retryOn: ['timeout'] },
      { outcome: 'timeout', bytesSent: true },
      true,
      'timeout',
    ],
    ['condition disabled', { retryOn: ['reset'] }, {}, false, 'not_retryable'],
    [
      '503, statuses empty (default)',
      {},
      { outcome: 'success', status: 503, bytesSent: true },
      false,
      'not_retryable',
    ],
    [
      '503 listed, GET',
      { statuses: [503] },
      { outcome: 'success', status: 503, bytesSent: true },
      true,
      'status',
    ],
    [
      '503 listed, POST',
      { statuses: [503] },
      { method: 'POST', outcome: 'success', status: 503, bytesSent: true },
      false,
      'non_idempotent',
    ],
    [
      'body failed mid-stream',
      {},
      { outcome: 'reset', status: 200, bytesSent: true },
      false,
      'response_started',
    ],
    ['client went away', {}, { outcome: 'client_abort', bytesSent: true }, false, 'not_retryable'],
    [
      'client held the exchange up',
      {},
      { outcome: 'client_timeout', bytesSent: true },
      false,
      'not_retryable',
    ],
    ['client sent a bad body', {}, { outcome: 'client_error', bytesSent: true }, false, 'not_retryable'],
    [
      'TLS failure, another endpoint left, POST',
      {},
      { outcome: 'tls_error', method: 'POST' },
      true,
      'connect_failure',
    ],
    ['streamed body, not replayable', {}, { bodyReplayable: false }, false, 'body_not_replayable'],
    ['max attempts reached', {}, { attempt: 2 }, false, 'max_attempts'],
    ['third attempt allowed by maxAttempts 3', { maxAttempts: 3 }, { attempt: 2 }, true, 'connect_failure'],
    ['retries disabled', { maxAttempts: 1 }, {}, false, 'disabled'],
    ['past the total timeout', {}, { elapsedMs: 29_990 }, false, 'deadline'],
  ] as const)('%s', (_what, cfg, over, retry, reason) => {
    const d = policy(cfg).decide(input(over as Partial<RetryInput>), open);
    expect(d.retry).toBe(retry);
    expect(d.reason).toBe(reason);
  });

  it('consults the breaker and then the budget, withdrawing only when everything else says yes', () => {
    let withdrawn = 0;
    const gates = (circuitOpen: boolean, budgetLeft: boolean): RetryGates => ({
      circuitOpen: () => circuitOpen,
      tryWithdraw: () => {
        withdrawn++;
        return budgetLeft;
      },
      otherEndpoint: () => true,
    });
    const p = policy();
    expect(p.decide(input(), gates(true, true)).reason).toBe('circuit_open');
    expect(p.decide(input({ bodyReplayable: false }), gates(false, true)).reason).toBe('body_not_replayable');
    expect(withdrawn).toBe(0);
    expect(p.decide(input(), gates(false, false)).reason).toBe('budget_exhausted');
    expect(withdrawn).toBe(1);
  });

  it('retries a TLS failure only when an endpoint the request has not tried is left, without spending budget otherwise', () => {
    let withdrawn = 0;
    let asked: unknown;
    const gates = (other: boolean): RetryGates => ({
      circuitOpen: () => false,
      tryWithdraw: () => {
        withdrawn++;
        return true;
      },
      otherEndpoint: (tried) => {
        asked = tried;
        return other;
      },
    });
    const tried = [] as unknown as NonNullable<RetryInput['tried']>;
    const p = policy();
    expect(p.decide(input({ outcome: 'tls_error', tried }), gates(false))).toEqual({
      retry: false,
      reason: 'no_other_endpoint',
    });
    expect(asked).toBe(tried);
    expect(withdrawn).toBe(0);
    expect(p.decide(input({ outcome: 'tls_error', tried }), gates(true))).toMatchObject({
      retry: true,
      reason: 'connect_failure',
    });
    expect(withdrawn).toBe(1);
    // Other failures do not ask: they may be retried on the same endpoint.
    asked = undefined;
    expect(p.decide(input({ outcome: 'connect_error' }), gates(false)).retry).toBe(true);
    expect(asked).toBeUndefined();
  });

  it('waits for Retry-After when it fits the total timeout and the cap, never less than the backoff', () => {
    const p = policy({ statuses: [503], maxRetryAfter: '3s' }, 10_000, () => 0.999);
    const s503 = { outcome: 'success', status: 503, bytesSent: true } as const;
    expect(p.decide(input({ ...s503, retryAfterMs: 2000 }), open)).toEqual({
      retry: true,
      delayMs: 2000,
      reason: 'status',
    });
    expect(p.decide(input({ ...s503, retryAfterMs: 0 }), open)).toEqual({
      retry: true,
      delayMs: 25,
      reason: 'status',
    });
    expect(p.decide(input({ ...s503, retryAfterMs: 3001 }), open).reason).toBe('retry_after_too_long');
    expect(p.decide(input({ ...s503, retryAfterMs: 2000, elapsedMs: 8000 }), open).reason).toBe('deadline');
    expect(p.decide(input({ ...s503, retryAfterMs: 2000, elapsedMs: 7999 }), open).retry).toBe(true);
  });

  it('with the total timeout disabled only maxRetryAfter bounds the wait', () => {
    const p = policy({ statuses: [503], maxRetryAfter: '3s' }, 0);
    const d = p.decide(
      input({ outcome: 'success', status: 503, bytesSent: true, retryAfterMs: 3000, elapsedMs: 1e9 }),
      open,
    );
    expect(d).toMatchObject({ retry: true, delayMs: 3000 });
  });
});

describe('backoffDelay (full jitter)', () => {
  it('stays within [0, min(max, base × 2^(n-1))] and reaches both ends', () => {
    for (const [retry, bound] of [
      [1, 25],
      [2, 50],
      [3, 100],
      [4, 200],
      [5, 250],
      [9, 250],
    ] as const) {
      expect(backoffDelay(retry, 25, 250, () => 0)).toBe(0);
      expect(backoffDelay(retry, 25, 250, () => 0.999_999)).toBe(bound);
      for (let i = 0; i < 200; i++) {
        const d = backoffDelay(retry, 25, 250, Math.random);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThanOrEqual(bound);
      }
    }
  });

  it('is spread, not constant: jitter decorrelates clients', () => {
    const seen = new Set(Array.from({ length: 100 }, () => backoffDelay(3, 25, 250, Math.random)));
    expect(seen.size).toBeGreaterThan(20);
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  it.each([
    ['5', 5000],
    [' 0 ', 0],
    ['Thu, 01 Jan 2026 00:00:03 GMT', 3000],
    ['Wed, 31 Dec 2025 23:59:00 GMT', 0],
    ['-1', undefined],
    ['1.5', undefined],
    ['soon', undefined],
    ['2026-01-01', undefined],
  ] as const)('%j → %s', (value, ms) => {
    expect(parseRetryAfter(value, now)).toBe(ms);
  });
  it('handles absent and repeated headers', () => {
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
    expect(parseRetryAfter(['2', '9'], now)).toBe(2000);
  });
});

describe('RetryPolicy.decide, a stale pooled connection', () => {
  const stale = { outcome: 'stale_connection', bytesSent: true } as const;
  const shut: RetryGates = { ...open, tryWithdraw: () => false };
  const tripped: RetryGates = { ...open, circuitOpen: () => true };
  it.each([
    // [what, policy config, input, gates, expected reason]
    ['GET, retries disabled, budget empty', { maxAttempts: 1 }, {}, shut, 'stale_connection'],
    [
      'GET at maxAttempts, retryOn without reset',
      { retryOn: ['timeout'] },
      { attempt: 2 },
      open,
      'stale_connection',
    ],
    ['POST whose body was not written', {}, { method: 'POST', bodySent: false }, open, 'stale_connection'],
    ['POST whose body was written', {}, { method: 'POST', bodySent: true }, open, 'non_idempotent'],
    ['POST, body not known to be unsent', {}, { method: 'POST' }, open, 'non_idempotent'],
    ['GET, body not replayable', {}, { bodyReplayable: false }, open, 'body_not_replayable'],
    ['GET, circuit open', {}, {}, tripped, 'circuit_open'],
    ['GET, past the deadline', {}, { elapsedMs: 30_000 }, open, 'deadline'],
  ] as const)('%s → %s', (_what, cfg, over, gates, reason) => {
    const d = policy(cfg).decide(input({ ...stale, ...over }), gates);
    expect(d.reason).toBe(reason);
    if (d.retry) expect(d.delayMs).toBe(0);
  });
});
