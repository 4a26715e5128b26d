import { describe, expect, it } from 'vitest';
import {
  CircuitBreaker,
  type CircuitTransition,
  CLOSED,
  HALF_OPEN,
  NO_TICKET,
  OPEN,
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

/** allow()'s answer, named: denied, a probe, or an ordinary admission. */
function admit(b: CircuitBreaker): 'denied' | 'probe' | 'allowed' {
  const ticket = b.allow();
  return ticket === NO_TICKET ? 'denied' : b.isProbe(ticket) ? 'probe' : 'allowed';
}

/** `n` requests admitted now, each failing at once. */
function fail(b: CircuitBreaker, clock: ManualClock, n: number): void {
  for (let i = 0; i < n; i++) b.onFailure(clock.t, b.allow());
}

function succeed(b: CircuitBreaker, clock: ManualClock): void {
  b.onSuccess(clock.t, b.allow());
}

describe('CircuitBreaker', () => {
  it('opens on the configured number of consecutive failures, not one before', () => {
    const { breaker, clock, transitions } = setup({ consecutiveFailures: 5, failureRatio: 0 });
    fail(breaker, clock, 4);
    expect(breaker.state).toBe(CLOSED);
    succeed(breaker, clock); // a success resets the run
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
      succeed(breaker, clock);
      fail(breaker, clock, 1);
    }
    expect(breaker.state).toBe(CLOSED);
    succeed(breaker, clock); // 19 requests, 9 failed
    fail(breaker, clock, 1); // 20 requests, 10 failed: 50%
    expect(breaker.state).toBe(OPEN);
  });

  it('forgets failures older than the window', () => {
    const { breaker, clock } = setup({ consecutiveFailures: 0, failureRatio: 0.5, minimumRequests: 20 });
    fail(breaker, clock, 19);
    clock.advance(11_000);
    for (let i = 0; i < 19; i++) succeed(breaker, clock);
    fail(breaker, clock, 1); // 20 in the window, 1 failed
    expect(breaker.state).toBe(CLOSED);
  });

  it('rejects while open, then admits exactly the configured probes when half-open', () => {
    const { breaker, clock, path } = setup({ consecutiveFailures: 1, halfOpenProbes: 2 });
    expect(admit(breaker)).toBe('allowed');
    fail(breaker, clock, 1);
    expect(admit(breaker)).toBe('denied');
    expect(breaker.retryAfterMs()).toBe(5000);
    clock.advance(4999);
    expect(admit(breaker)).toBe('denied');
    expect(breaker.retryAfterMs()).toBe(1);
    clock.advance(1);
    const p1 = breaker.allow();
    expect(breaker.isProbe(p1)).toBe(true);
    expect(breaker.state).toBe(HALF_OPEN);
    const p2 = breaker.allow();
    expect(breaker.isProbe(p2)).toBe(true);
    expect(admit(breaker)).toBe('denied');
    expect(breaker.onSuccess(clock.t, p1)).toBe(NO_TICKET); // a probe reports once
    expect(breaker.state).toBe(HALF_OPEN); // one of two probes done
    expect(admit(breaker)).toBe('denied'); // probes are admissions, not a rate: no third
    breaker.onSuccess(clock.t, p2);
    expect(breaker.state).toBe(CLOSED);
    expect(admit(breaker)).toBe('allowed');
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
      const probe = breaker.allow();
      expect(breaker.isProbe(probe)).toBe(true);
      breaker.onFailure(clock.t, probe);
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
      const probe = breaker.allow();
      expect(breaker.isProbe(probe)).toBe(true);
      breaker.onSuccess(clock.t, probe);
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
    const early = [breaker.allow(), breaker.allow()];
    fail(breaker, clock, 1);
    expect(breaker.onSuccess(clock.t, early[0]!)).toBe(NO_TICKET);
    expect(breaker.onFailure(clock.t, early[1]!)).toBe(NO_TICKET);
    expect(breaker.state).toBe(OPEN);
    expect(breaker.describe().trips).toBe(1);
  });

  it('a stale success (admitted while closed) arriving while half-open does not close the circuit', () => {
    const { breaker, clock, path } = setup({ consecutiveFailures: 1, halfOpenProbes: 1 });
    const stale = breaker.allow(); // admitted while closed
    fail(breaker, clock, 1);
    clock.advance(5000);
    const probe = breaker.allow();
    expect(breaker.isProbe(probe)).toBe(true);
    expect(breaker.isProbe(stale)).toBe(false);
    expect(breaker.onSuccess(clock.t, stale)).toBe(NO_TICKET);
    expect(breaker.state).toBe(HALF_OPEN);
    expect(breaker.describe().probesInFlight).toBe(1);
    expect(admit(breaker)).toBe('denied'); // the probe still holds the only slot
    breaker.onSuccess(clock.t, probe);
    expect(breaker.state).toBe(CLOSED);
    expect(path()).toEqual(['closed>open', 'open>half_open', 'half_open>closed']);
  });

  it('a stale failure arriving while half-open does not reopen the circuit', () => {
    const { breaker, clock, path } = setup({ consecutiveFailures: 1, halfOpenProbes: 1 });
    const stale = breaker.allow();
    fail(breaker, clock, 1);
    clock.advance(5000);
    const probe = breaker.allow();
    breaker.onFailure(clock.t, stale);
    expect(breaker.state).toBe(HALF_OPEN);
    expect(breaker.describe().trips).toBe(1);
    breaker.onFailure(clock.t, probe); // the real probe does
    expect(breaker.state).toBe(OPEN);
    expect(path()).toEqual(['closed>open', 'open>half_open', 'half_open>open']);
  });

  it('results from before a trip do not count in the next closed period', () => {
    const { breaker, clock } = setup({ consecutiveFailures: 2, halfOpenProbes: 1 });
    const stale = breaker.allow();
    fail(breaker, clock, 2);
    clock.advance(5000);
    breaker.onSuccess(clock.t, breaker.allow());
    expect(breaker.state).toBe(CLOSED);
    fail(breaker, clock, 1);
    breaker.onFailure(clock.t, stale); // would be the second failure in a row
    expect(breaker.state).toBe(CLOSED);
    expect(breaker.describe().consecutiveFailures).toBe(1);
  });

  it('frees a probe slot once when the probe is cancelled or ends without a verdict', () => {
    const { breaker, clock } = setup({ consecutiveFailures: 1, halfOpenProbes: 2 });
    const stale = breaker.allow();
    fail(breaker, clock, 1);
    clock.advance(5000);
    const a = breaker.allow();
    const b = breaker.allow();
    expect(admit(breaker)).toBe('denied');
    expect(breaker.cancelProbe(a)).toBe(NO_TICKET);
    expect(breaker.describe().probesInFlight).toBe(1);
    expect(breaker.cancelProbe(NO_TICKET)).toBe(NO_TICKET); // the request keeps NO_TICKET: no second time
    expect(breaker.onNeutral(stale)).toBe(NO_TICKET); // not a probe: frees nothing
    expect(breaker.describe().probesInFlight).toBe(1);
    const c = breaker.allow(); // a's slot
    expect(breaker.isProbe(c)).toBe(true);
    expect(admit(breaker)).toBe('denied');
    expect(breaker.onNeutral(b)).toBe(NO_TICKET);
    expect(breaker.describe().probesInFlight).toBe(1);
    breaker.onSuccess(clock.t, breaker.allow()); // b's slot
    expect(breaker.state).toBe(HALF_OPEN);
    breaker.onSuccess(clock.t, c);
    expect(breaker.state).toBe(CLOSED);
  });

  it('writes off probes that never report; their late results and cancellations no longer count', () => {
    const { breaker, clock } = setup({ consecutiveFailures: 1, halfOpenProbes: 1 }, 10_000);
    fail(breaker, clock, 1);
    clock.advance(5000);
    const lost = breaker.allow();
    expect(breaker.isProbe(lost)).toBe(true);
    clock.advance(9_999);
    expect(admit(breaker)).toBe('denied');
    clock.advance(1);
    const next = breaker.allow();
    expect(breaker.isProbe(next)).toBe(true);
    expect(breaker.isProbe(lost)).toBe(false);
    breaker.cancelProbe(lost);
    expect(admit(breaker)).toBe('denied'); // next still holds the slot
    breaker.onFailure(clock.t, lost);
    expect(breaker.state).toBe(HALF_OPEN);
    breaker.onSuccess(clock.t, next);
    expect(breaker.state).toBe(CLOSED);
  });

  it('reports half-open once the open time is up, without allow(); one transition, not two', () => {
    const { breaker, clock, path } = setup({ consecutiveFailures: 1, halfOpenProbes: 1 });
    fail(breaker, clock, 1);
    clock.advance(4999);
    expect(breaker.describe()).toMatchObject({ state: 'open', retryAfterMs: 1 });
    clock.advance(1);
    expect(breaker.describe()).toMatchObject({ state: 'half_open', retryAfterMs: 0, probesInFlight: 0 });
    expect(breaker.state).toBe(HALF_OPEN);
    expect(path()).toEqual(['closed>open', 'open>half_open']);
    const probe = breaker.allow();
    expect(breaker.isProbe(probe)).toBe(true);
    expect(breaker.describe()).toMatchObject({ state: 'half_open', probesInFlight: 1 }); // reads change nothing
    expect(path()).toEqual(['closed>open', 'open>half_open']);
    breaker.onSuccess(clock.t, probe);
    expect(path()).toEqual(['closed>open', 'open>half_open', 'half_open>closed']);
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
