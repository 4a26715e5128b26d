import { describe, expect, it } from 'vitest';
import {
  ALLOWED,
  CircuitBreaker,
  type CircuitTransition,
  CLOSED,
  DENIED,
  HALF_OPEN,
  OPEN,
  PROBE,
} from '../../../src/dataplane/upstream/circuit-breaker.ts';
import { CircuitBreakerSchema } from '../../../src/dataplane/upstream/policy-schema.ts';
import { ManualClock } from './helpers.ts';

function setup(cfg: Record<string, unknown> = {}, probeTimeoutMs = 30_000) {
  const clock = new ManualClock();
  const transitions: CircuitTransition[] = [];
  const breaker = new CircuitBreaker(CircuitBreakerSchema.parse(cfg), {
    now: clock.now,
    probeTimeoutMs,
    onTransition: (t) => transitions.push(t),
  });
  const path = () => transitions.map((t) => `${t.from}>${t.to}`);
  return { clock, breaker, transitions, path };
}

function fail(b: CircuitBreaker, clock: ManualClock, n: number): void {
  for (let i = 0; i < n; i++) b.onFailure(clock.t);
}

describe('CircuitBreaker', () => {
  it('opens on the configured number of consecutive failures, not one before', () => {
    const { breaker, clock, transitions } = setup({ consecutiveFailures: 5, failureRatio: 0 });
    fail(breaker, clock, 4);
    expect(breaker.state).toBe(CLOSED);
    breaker.onSuccess(clock.t); // a success resets the run
    fail(breaker, clock, 4);
    expect(breaker.state).toBe(CLOSED);
    fail(breaker, clock, 1);
    expect(breaker.state).toBe(OPEN);
    expect(transitions).toEqual([
      { from: 'closed', to: 'open', reason: '5 consecutive failures', openForMs: 5000 },
    ]);
  });

  it('opens on the failure ratio over the window only with the minimum volume', () => {
    const { breaker, clock } = setup({ consecutiveFailures: 0, failureRatio: 0.5, minimumRequests: 20 });
    // 9 failures, 9 successes: ratio 50% but volume 18 < 20.
    for (let i = 0; i < 9; i++) {
      breaker.onSuccess(clock.t);
      breaker.onFailure(clock.t);
    }
    expect(breaker.state).toBe(CLOSED);
    breaker.onSuccess(clock.t); // 19 requests, 9 failed
    breaker.onFailure(clock.t); // 20 requests, 10 failed: 50%
    expect(breaker.state).toBe(OPEN);
  });

  it('forgets failures older than the window', () => {
    const { breaker, clock } = setup({ consecutiveFailures: 0, failureRatio: 0.5, minimumRequests: 20 });
    fail(breaker, clock, 19);
    clock.advance(11_000);
    for (let i = 0; i < 19; i++) breaker.onSuccess(clock.t);
    breaker.onFailure(clock.t); // 20 in the window, 1 failed
    expect(breaker.state).toBe(CLOSED);
  });

  it('rejects while open, then admits exactly the configured probes when half-open', () => {
    const { breaker, clock, path } = setup({ consecutiveFailures: 1, halfOpenProbes: 2 });
    expect(breaker.allow()).toBe(ALLOWED);
    fail(breaker, clock, 1);
    expect(breaker.allow()).toBe(DENIED);
    expect(breaker.retryAfterMs()).toBe(5000);
    clock.advance(4999);
    expect(breaker.allow()).toBe(DENIED);
    expect(breaker.retryAfterMs()).toBe(1);
    clock.advance(1);
    expect(breaker.allow()).toBe(PROBE);
    expect(breaker.state).toBe(HALF_OPEN);
    expect(breaker.allow()).toBe(PROBE);
    expect(breaker.allow()).toBe(DENIED);
    breaker.onSuccess(clock.t);
    expect(breaker.state).toBe(HALF_OPEN); // one of two probes done
    expect(breaker.allow()).toBe(DENIED); // probes are admissions, not a rate: no third
    breaker.onSuccess(clock.t);
    expect(breaker.state).toBe(CLOSED);
    expect(breaker.allow()).toBe(ALLOWED);
    expect(path()).toEqual(['closed>open', 'open>half_open', 'half_open>closed']);
  });

  it('a failed probe reopens for twice as long; the duration is capped', () => {
    const { breaker, clock, transitions } = setup({
      consecutiveFailures: 1,
      openDuration: '5s',
      maxOpenDuration: '30s',
    });
    fail(breaker, clock, 1);
    const durations: number[] = [];
    for (let i = 0; i < 5; i++) {
      durations.push(transitions.at(-1)!.openForMs!);
      clock.advance(transitions.at(-1)!.openForMs!);
      expect(breaker.allow()).toBe(PROBE);
      breaker.onFailure(clock.t);
      expect(breaker.state).toBe(OPEN);
    }
    durations.push(transitions.at(-1)!.openForMs!);
    expect(durations).toEqual([5000, 10_000, 20_000, 30_000, 30_000, 30_000]);
    expect(transitions.at(-1)).toMatchObject({
      from: 'half_open',
      to: 'open',
      reason: 'half-open probe failed',
    });
  });

  it('a trip soon after closing keeps growing; after a long quiet spell it starts from the base again', () => {
    const { breaker, clock, transitions } = setup({
      consecutiveFailures: 1,
      openDuration: '5s',
      maxOpenDuration: '60s',
    });
    const tripAndRecover = () => {
      fail(breaker, clock, 1);
      const d = transitions.at(-1)!.openForMs!;
      clock.advance(d);
      expect(breaker.allow()).toBe(PROBE);
      breaker.onSuccess(clock.t);
      expect(breaker.state).toBe(CLOSED);
      return d;
    };
    expect(tripAndRecover()).toBe(5000);
    clock.advance(1000);
    expect(tripAndRecover()).toBe(10_000);
    clock.advance(60_000);
    expect(tripAndRecover()).toBe(5000);
  });

  it('ignores results of attempts admitted before the trip while open', () => {
    const { breaker, clock } = setup({ consecutiveFailures: 1, halfOpenProbes: 1 });
    fail(breaker, clock, 1);
    breaker.onSuccess(clock.t);
    breaker.onFailure(clock.t);
    expect(breaker.state).toBe(OPEN);
    expect(breaker.describe().trips).toBe(1);
  });

  it('frees a probe slot when the probe is cancelled, ends without a verdict, or never reports', () => {
    const { breaker, clock } = setup({ consecutiveFailures: 1, halfOpenProbes: 1 }, 10_000);
    fail(breaker, clock, 1);
    clock.advance(5000);
    expect(breaker.allow()).toBe(PROBE);
    breaker.cancelProbe();
    expect(breaker.allow()).toBe(PROBE);
    breaker.onNeutral();
    expect(breaker.allow()).toBe(PROBE);
    expect(breaker.allow()).toBe(DENIED);
    clock.advance(9_999);
    expect(breaker.allow()).toBe(DENIED);
    clock.advance(1);
    expect(breaker.allow()).toBe(PROBE);
  });

  it('describe() reports state, counters and the time left open', () => {
    const { breaker, clock } = setup({ consecutiveFailures: 3 });
    fail(breaker, clock, 2);
    expect(breaker.describe()).toMatchObject({ state: 'closed', consecutiveFailures: 2, retryAfterMs: 0 });
    fail(breaker, clock, 1);
    clock.advance(2000);
    expect(breaker.describe()).toMatchObject({ state: 'open', trips: 1, retryAfterMs: 3000 });
    clock.advance(3000);
    expect(breaker.describe().state).toBe('half_open');
  });
});
