import { describe, expect, it } from 'vitest';
import { RetrySchema } from '../../../src/dataplane/upstream/policy-schema.ts';
import { RetryBudget } from '../../../src/dataplane/upstream/retry-budget.ts';
import { ManualClock } from './helpers.ts';

function budget(cfg: Record<string, unknown>, clock: ManualClock): RetryBudget {
  return new RetryBudget(RetrySchema.parse({ budget: cfg }).budget, clock.now);
}

describe('RetryBudget', () => {
  it('starts with one second of the floor', () => {
    const clock = new ManualClock();
    const b = budget({ ratio: 0.2, minRetriesPerSecond: 3 }, clock);
    expect(b.remaining()).toBe(3);
    expect([b.tryWithdraw(), b.tryWithdraw(), b.tryWithdraw(), b.tryWithdraw()]).toEqual([
      true,
      true,
      true,
      false,
    ]);
  });

  it('earns ratio per request: 10 requests at 0.2 allow 2 retries (floor 0)', () => {
    const clock = new ManualClock();
    const b = budget({ ratio: 0.2, minRetriesPerSecond: 0 }, clock);
    expect(b.tryWithdraw()).toBe(false);
    for (let i = 0; i < 10; i++) b.requestStarted();
    expect(b.remaining()).toBe(2);
    expect([b.tryWithdraw(), b.tryWithdraw(), b.tryWithdraw()]).toEqual([true, true, false]);
  });

  it('earns the floor over time, capped at one second of it', () => {
    const clock = new ManualClock();
    const b = budget({ ratio: 0, minRetriesPerSecond: 3, window: '10s' }, clock);
    while (b.tryWithdraw());
    clock.advance(500);
    expect(b.remaining()).toBe(1);
    clock.advance(500);
    expect(b.remaining()).toBe(3);
    clock.advance(60_000);
    expect(b.remaining()).toBe(3);
  });

  it('a burst of failing requests after a quiet spell gets no more than ratio × R + floor × (T + 1)', () => {
    const clock = new ManualClock();
    const ratio = 0.2;
    const floor = 3;
    const b = budget({ ratio, minRetriesPerSecond: floor, window: '10s' }, clock);
    // Some traffic, then more than a window of silence: its credit has expired.
    for (let i = 0; i < 100; i++) b.requestStarted();
    clock.advance(15_000);
    // 500 requests in half a second, each failing and retried once when the budget allows.
    const requests = 500;
    const spanMs = 500;
    let retries = 0;
    for (let i = 0; i < requests; i++) {
      clock.t += spanMs / requests;
      b.requestStarted();
      if (b.tryWithdraw()) retries++;
    }
    const bound = ratio * requests + floor * (spanMs / 1000 + 1);
    expect(bound).toBe(104.5);
    expect(retries).toBeLessThanOrEqual(bound);
    // Not vacuous: the ratio's share is all there.
    expect(retries).toBeGreaterThanOrEqual(ratio * requests);
  });

  it('lets credit from old traffic expire with the window', () => {
    const clock = new ManualClock();
    const b = budget({ ratio: 0.5, minRetriesPerSecond: 0, window: '10s' }, clock);
    for (let i = 0; i < 100; i++) b.requestStarted();
    expect(b.remaining()).toBe(50);
    clock.advance(11_000);
    expect(b.remaining()).toBe(0);
    expect(b.tryWithdraw()).toBe(false);
  });

  it('under 100% failure: attempts ≤ requests × (1 + ratio) + floor × (seconds + 1), and the budget is used', () => {
    const clock = new ManualClock();
    const ratio = 0.2;
    const floor = 3;
    const b = budget({ ratio, minRetriesPerSecond: floor, window: '10s' }, clock);
    const seconds = 120;
    const rps = 50;
    let requests = 0;
    let attempts = 0;
    for (let ms = 0; ms < seconds * 1000; ms += 1000 / rps) {
      clock.t = 1_000 + ms;
      b.requestStarted();
      requests++;
      attempts++;
      // Every attempt fails; retry as long as the budget allows (maxAttempts far away).
      for (let retry = 0; retry < 9 && b.tryWithdraw(); retry++) attempts++;
    }
    const bound = requests * (1 + ratio) + floor * (seconds + 1);
    expect(attempts).toBeLessThanOrEqual(bound);
    // Not a vacuous bound: the budget spends nearly all of it.
    expect(attempts).toBeGreaterThan(bound - floor * 2 - 1);
    expect(attempts / requests).toBeLessThan(1.3);
  });

  it('a bursty request pattern cannot exceed the bound either', () => {
    const clock = new ManualClock();
    const b = budget({ ratio: 0.5, minRetriesPerSecond: 1, window: '10s' }, clock);
    let requests = 0;
    let retries = 0;
    for (let s = 0; s < 100; s++) {
      clock.t = 1_000 + s * 1000;
      const burst = s % 10 === 9 ? 200 : 0;
      for (let i = 0; i < burst; i++) {
        b.requestStarted();
        requests++;
      }
      while (b.tryWithdraw()) retries++;
      clock.t += 999;
      while (b.tryWithdraw()) retries++;
    }
    expect(retries).toBeLessThanOrEqual(0.5 * requests + 1 * (100 + 1));
  });
});
