import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { NO_TICKET } from '../../../src/dataplane/upstream/circuit-breaker.ts';
import { Cluster } from '../../../src/dataplane/upstream/cluster.ts';
import type { Endpoint } from '../../../src/dataplane/upstream/endpoint.ts';
import { GatewayError } from '../../../src/errors.ts';
import { clusterFactory, ManualClock, ORIGINS, seededRandom, tally, upstream } from './helpers.ts';

// A reload that changes an upstream's policy builds a new Cluster with `previous`: it takes the
// live endpoint set over, and endpoints whose transport settings did not change are the same
// objects, with the same pools. A change of the endpoint list itself is applied to the live set
// afterwards (`applyEndpoints`, which the reload's discovery sync calls; endpoint-set.test.ts).
// Tests that count picks use round robin: peak-EWMA's preferences (a fresh or penalised latency
// estimate) are not this file's business.

const { make, destroyAll } = clusterFactory();
afterEach(async () => {
  vi.useRealTimers();
  await destroyAll();
});

const { A, B, C, D } = ORIGINS;

const isOpen = (e: Endpoint): boolean => !e.pool.closed && !e.pool.destroyed;

function failFiveTimes(c: Cluster, e: Endpoint): void {
  for (let i = 0; i < 5; i++) {
    c.attemptStarted(e);
    c.attemptFinished(e, 'reset', 0, 1, { breakerTicket: NO_TICKET });
  }
}

describe('Cluster reload: endpoints whose transport is unchanged are taken over', () => {
  it('a policy-only change keeps every Endpoint object and its pool; closing the old cluster leaves them open', async () => {
    const old = make({ endpoints: [A, B] });
    const next = make(
      {
        endpoints: [A, B],
        retries: { maxAttempts: 3, statuses: [503] },
        timeouts: { response: '1s', request: '5s', idle: '5s' },
        circuitBreaker: { consecutiveFailures: 2 },
        bulkhead: { maxConcurrent: 10 },
        balancer: { kind: 'least_request' },
      },
      { previous: old },
    );
    expect(next).not.toBe(old);
    expect(next.endpoints[0]).toBe(old.endpoints[0]);
    expect(next.endpoints[1]).toBe(old.endpoints[1]);
    const pools = old.endpoints.map((e) => e.pool);
    expect(next.endpoints.map((e) => e.pool)).toEqual(pools);

    await old.close();
    expect(next.endpoints.every(isOpen)).toBe(true);
    expect(next.endpoints).toContain(next.pick());
    await next.close();
    expect(pools.every((p) => p.closed)).toBe(true);
  });

  it('a change of the pool settings or the connect timeout rebuilds the endpoints; the old pools close with the old cluster', async () => {
    for (const change of [
      { pool: { connections: 4 } },
      { pool: { keepAliveTimeout: '9s' } },
      { timeouts: { connect: '1s' } },
    ]) {
      const old = make({ endpoints: [A, B] });
      const next = make({ endpoints: [A, B], ...change }, { previous: old });
      expect(next.endpoints.some((e) => old.endpoints.includes(e))).toBe(false);
      await old.close();
      expect(old.endpoints.some(isOpen)).toBe(false);
      expect(next.endpoints.every(isOpen)).toBe(true);
    }
  });

  it('takes the live set over, not the config list: discovered endpoints, weights, zones and drains carry over', async () => {
    const rr = { balancer: { kind: 'round_robin' } };
    const old = make({ endpoints: [A, B], ...rr });
    old.applyEndpoints(
      [
        { url: B, weight: 3, zone: 'z1' },
        { url: C, state: 'draining' },
      ],
      'dns',
    );
    const [b, c] = old.endpoints;
    const next = make({ endpoints: [A, B], retries: { maxAttempts: 4 }, ...rr }, { previous: old });
    expect(next.endpoints).toEqual([b, c]);
    expect(next.endpoints.map((e) => [e.id, e.weight, e.zone, e.draining, e.source])).toEqual([
      [B, 3, 'z1', false, 'dns'],
      [C, 1, undefined, true, 'dns'],
    ]);
    expect(new Set(tally(50, () => next.pick()).keys())).toEqual(new Set([B]));
    await old.close();
    expect(next.endpoints.every(isOpen)).toBe(true);
  });

  it('with changed pool settings the set is rebuilt from what its sources said, new pools for all', async () => {
    const old = make({ endpoints: [A] });
    old.applyEndpoints([{ url: A }, { url: B, weight: 2, zone: 'z', metadata: { k: 'v' } }], 'registry');
    const next = make({ endpoints: [A], pool: { connections: 2 } }, { previous: old });
    expect(next.endpoints.some((e) => old.endpoints.includes(e))).toBe(false);
    expect(next.endpoints.map((e) => [e.id, e.weight, e.zone, e.metadata, e.source])).toEqual([
      [A, 1, undefined, {}, 'registry'],
      [B, 2, 'z', { k: 'v' }, 'registry'],
    ]);
    await old.close();
    expect(old.endpoints.some(isOpen)).toBe(false);
    expect(next.endpoints.every(isOpen)).toBe(true);
  });

  it('in-flight attempts on the old cluster finish on the shared endpoint; counts and the latency estimate carry over', async () => {
    const clock = new ManualClock();
    const old = make({ endpoints: [A] }, { now: clock.now });
    const e = old.endpoints[0]!;
    const req = { breakerTicket: NO_TICKET };
    expect(old.admit(req)).toBeUndefined();
    old.attemptStarted(e);
    old.attemptFinished(e, 'success', 200, 250, req);
    const rtt = e.rttMs;
    expect(rtt).toBe(250);
    old.attemptStarted(e); // still running when the reload happens
    const next = make({ endpoints: [A], retries: { maxAttempts: 3 } }, { previous: old, now: clock.now });
    await old.close();
    expect(next.endpoints[0]).toBe(e);
    expect(e.inFlight).toBe(1);
    expect(e.rttMs).toBe(rtt);
    old.attemptFinished(e, 'success', 200, 250, req);
    old.release(req);
    expect(e.inFlight).toBe(0);
    expect(isOpen(e)).toBe(true);
    expect(next.describe().endpoints[0]).toMatchObject({ inFlight: 0, ewmaMs: 250 });
  });

  it('destroy() after close() spares endpoints a newer cluster holds; the last holder closes the pool', async () => {
    const old = make({ endpoints: [A, B] });
    const next = make({ endpoints: [B, C], retries: { maxAttempts: 1 } }, { previous: old });
    next.applyEndpoints([{ url: B }, { url: C }]);
    const [a, b] = old.endpoints;
    // A left the new cluster's set, but the old cluster still holds it.
    expect(isOpen(a!)).toBe(true);
    await old.close();
    await old.destroy();
    expect([isOpen(a!), isOpen(b!)]).toEqual([false, true]);
    await next.destroy();
    expect(b!.pool.destroyed).toBe(true);
  });

  it('a closed cluster hands nothing over', async () => {
    const old = make({ endpoints: [A] });
    await old.close();
    const next = make({ endpoints: [A], retries: { maxAttempts: 1 } }, { previous: old });
    expect(next.endpoints[0]).not.toBe(old.endpoints[0]);
    expect(isOpen(next.endpoints[0]!)).toBe(true);
  });

  it('a chain of reloads keeps the same endpoint', async () => {
    let current = make({ endpoints: [A] });
    const e = current.endpoints[0]!;
    for (let n = 2; n <= 4; n++) {
      const next = make({ endpoints: [A], retries: { maxAttempts: n } }, { previous: current });
      await current.close();
      current = next;
    }
    expect(current.endpoints[0]).toBe(e);
    expect(isOpen(e)).toBe(true);
  });
});

describe('Cluster reload: health and ejection state', () => {
  const rr = { circuitBreaker: { enabled: false }, balancer: { kind: 'round_robin' } };

  it('an ejected endpoint stays ejected in the new cluster and returns when its ejection ends', async () => {
    vi.useFakeTimers();
    const now = (): number => Date.now();
    const old = make({ endpoints: [A, B, C, D], ...rr }, { now });
    const bad = old.endpoints[1]!;
    failFiveTimes(old, bad);
    expect(bad.ejected).toBe(true);
    vi.advanceTimersByTime(10_000);

    const next = make(
      { endpoints: [A, B, C, D], ...rr, retries: { maxAttempts: 3 } },
      { previous: old, now },
    );
    await old.close();
    expect(next.endpoints[1]).toBe(bad);
    expect(tally(400, () => next.pick()).has(bad.id)).toBe(false);
    expect(next.describe().endpoints[1]).toMatchObject({ state: 'ejected', eligible: false });

    vi.advanceTimersByTime(19_999);
    expect(bad.ejected).toBe(true);
    vi.advanceTimersByTime(1);
    expect(bad.ejected).toBe(false);
    expect(tally(400, () => next.pick()).has(bad.id)).toBe(true);
  });

  it('turning outlier detection off clears ejections; removing health checks makes endpoints healthy', async () => {
    vi.useFakeTimers();
    const now = (): number => Date.now();
    const old = make({ endpoints: [A, B, C, D], ...rr }, { now });
    failFiveTimes(old, old.endpoints[1]!);
    old.endpoints[2]!.healthy = false; // as a failing health check would have left it
    const next = make(
      { endpoints: [A, B, C, D], ...rr, outlierDetection: { enabled: false } },
      { previous: old, now },
    );
    await old.close();
    expect(next.endpoints.map((e) => [e.ejected, e.healthy])).toEqual([
      [false, true],
      [false, true],
      [false, true],
      [false, true],
    ]);
    expect(tally(400, () => next.pick()).size).toBe(4);
  });

  it('with health checks in both configs an unhealthy endpoint stays unhealthy', async () => {
    const check = { healthCheck: { interval: '1h' }, ...rr };
    const old = make({ endpoints: [A, B, C], ...check });
    old.endpoints[0]!.healthy = false;
    const next = make({ endpoints: [A, B, C], ...check, retries: { maxAttempts: 3 } }, { previous: old });
    await old.close();
    expect(next.endpoints[0]!.healthy).toBe(false);
    expect(tally(300, () => next.pick()).has(A)).toBe(false);
  });

  it('abandon() (the reload failed) gives the shared endpoints back as they were and closes only what it built', async () => {
    vi.useFakeTimers();
    const now = (): number => Date.now();
    const old = make({ endpoints: [A, B, C, D], ...rr }, { now });
    failFiveTimes(old, old.endpoints[1]!);
    old.endpoints[2]!.healthy = false;
    const next = make(
      { endpoints: [A, B, C, D], ...rr, outlierDetection: { enabled: false } },
      { previous: old, now },
    );
    expect(old.endpoints[1]!.ejected).toBe(false);
    await next.abandon();
    expect(old.endpoints.map((e) => [e.weight, e.ejected, e.healthy])).toEqual([
      [1, false, true],
      [1, true, true],
      [1, false, false],
      [1, false, true],
    ]);
    expect(old.endpoints.every(isOpen)).toBe(true);
    // One whose pool settings changed built its own endpoints: abandoning destroys those.
    const rebuilt = make(
      { endpoints: [A, B, C, D], ...rr, pool: { connections: 3 } },
      { previous: old, now },
    );
    await rebuilt.abandon();
    expect(rebuilt.endpoints.every((e) => e.pool.destroyed)).toBe(true);
    expect(old.endpoints.every(isOpen)).toBe(true);
    // The old cluster's own ejection timer still brings the endpoint back.
    vi.advanceTimersByTime(30_000);
    expect(old.endpoints[1]!.ejected).toBe(false);
    await old.close();
    expect(old.endpoints.some(isOpen)).toBe(false);
  });
});

describe('Cluster reload: breaker, retry budget and bulkhead whose settings are unchanged are taken over', () => {
  const breaker = { consecutiveFailures: 3 };
  const bulkhead = { maxConcurrent: 1, maxQueued: 1, queueTimeout: '10s' };

  function logSink(): { logger: pino.Logger; messages: string[] } {
    const messages: string[] = [];
    const logger = pino({ level: 'info' }, { write: (s: string) => messages.push(JSON.parse(s).msg) });
    return { logger, messages };
  }

  /** One admitted request whose only attempt fails to connect. */
  function failedRequest(c: Cluster): void {
    const req = { breakerTicket: NO_TICKET };
    expect(c.admit(req)).toBeUndefined();
    const e = c.pick()!;
    c.attemptStarted(e);
    c.attemptFinished(e, 'connect_error', 0, 1, req);
    c.release(req);
  }

  it('an open circuit stays open across a reload of other settings; the new cluster logs its transitions', async () => {
    const clock = new ManualClock();
    const oldLog = logSink();
    const newLog = logSink();
    const old = make({ endpoints: [A], circuitBreaker: breaker }, { now: clock.now, logger: oldLog.logger });
    for (let i = 0; i < 3; i++) failedRequest(old);
    expect(oldLog.messages).toContain('circuit breaker opened');

    const next = make(
      { endpoints: [A], circuitBreaker: breaker, retries: { maxAttempts: 3 } },
      { previous: old, now: clock.now, logger: newLog.logger },
    );
    await old.close();
    expect(next.describe().circuitBreaker).toMatchObject({ state: 'open', trips: 1 });
    expect((next.admit({ breakerTicket: NO_TICKET }) as GatewayError).code).toBe('CIRCUIT_OPEN');

    clock.advance(5000);
    const probe = { breakerTicket: NO_TICKET };
    expect(next.admit(probe)).toBeUndefined();
    const e = next.pick()!;
    next.attemptStarted(e);
    next.attemptFinished(e, 'success', 200, 1, probe);
    next.release(probe);
    expect(next.describe().circuitBreaker?.state).toBe('closed');
    expect(newLog.messages).toEqual(['circuit breaker half-open', 'circuit breaker closed']);
    expect(oldLog.messages).toEqual(['circuit breaker opened']);
  });

  it('a request still running on the old config that trips the taken-over breaker gets the transition event', () => {
    const old = make({ endpoints: [A], circuitBreaker: breaker });
    failedRequest(old);
    failedRequest(old);
    const running = { breakerTicket: NO_TICKET };
    expect(old.admit(running)).toBeUndefined();
    const e = old.pick()!;
    old.attemptStarted(e);

    const next = make(
      { endpoints: [A], circuitBreaker: breaker, retries: { maxAttempts: 3 } },
      { previous: old },
    );
    const events = old.attemptFinished(e, 'connect_error', 0, 1, running);
    expect(events?.map((x) => [x.name, x.attributes.to])).toEqual([['peregrine.circuit_transition', 'open']]);
    expect(next.describe().circuitBreaker?.state).toBe('open');
    // Nothing is left over for the next result recorded on either cluster.
    const other = { breakerTicket: NO_TICKET };
    expect(next.admit(other)).toBeInstanceOf(GatewayError);
  });

  it('a changed breaker setting (or probe timeout) starts a fresh, closed breaker', () => {
    const old = make({ endpoints: [A], circuitBreaker: breaker });
    for (let i = 0; i < 3; i++) failedRequest(old);
    expect(old.describe().circuitBreaker?.state).toBe('open');
    const tuned = make({ endpoints: [A], circuitBreaker: { consecutiveFailures: 4 } }, { previous: old });
    expect(tuned.describe().circuitBreaker).toMatchObject({ state: 'closed', trips: 0 });
    const slower = make(
      { endpoints: [A], circuitBreaker: breaker, timeouts: { request: '45s' } },
      { previous: old },
    );
    expect(slower.describe().circuitBreaker).toMatchObject({ state: 'closed', trips: 0 });
  });

  it('a spent retry budget stays spent; a changed budget starts full', () => {
    const retries = { maxAttempts: 3, budget: { ratio: 0.1, minRetriesPerSecond: 1, window: '10s' } };
    const clock = new ManualClock();
    const old = make({ endpoints: [A, B], retries }, { now: clock.now });
    const input = {
      attempt: 1,
      method: 'GET',
      outcome: 'reset' as const,
      status: 0,
      bytesSent: true,
      bodyReplayable: true,
      elapsedMs: 1,
    };
    let granted = 0;
    while (old.retryDecision(input).retry) granted++;
    expect(granted).toBeGreaterThan(0);
    expect(old.describe().retryBudget?.remaining).toBeLessThan(1);

    const next = make({ endpoints: [A, B], retries, bulkhead }, { previous: old, now: clock.now });
    expect(next.describe().retryBudget?.remaining).toBe(old.describe().retryBudget?.remaining);
    expect(next.retryDecision(input)).toMatchObject({ retry: false, reason: 'budget_exhausted' });
    const changed = make(
      { endpoints: [A, B], retries: { ...retries, budget: { ...retries.budget, minRetriesPerSecond: 5 } } },
      { previous: old, now: clock.now },
    );
    expect(changed.retryDecision(input).retry).toBe(true);
  });

  it('requests still running on the old cluster keep their bulkhead slots; a waiter on the new one gets the slot they give back', async () => {
    const old = make({ endpoints: [A], bulkhead });
    const running = { breakerTicket: NO_TICKET };
    expect(old.admit(running)).toBeUndefined();

    const next = make({ endpoints: [A], bulkhead, retries: { maxAttempts: 3 } }, { previous: old });
    const waiting = next.admit({ breakerTicket: NO_TICKET });
    expect(waiting).toBeInstanceOf(Promise);
    expect(next.describe().bulkhead).toMatchObject({ active: 1, queued: 1 });
    // The queue is full: a third request is refused, as it would have been without the reload.
    expect((next.admit({ breakerTicket: NO_TICKET }) as GatewayError).code).toBe('UPSTREAM_OVERLOADED');

    await old.close();
    await old.destroy(); // the old cluster no longer owns the queue: the waiter is not rejected
    old.release(running);
    await expect(waiting).resolves.toBeUndefined();
    expect(next.describe().bulkhead).toMatchObject({ active: 1, queued: 0 });

    const resized = make({ endpoints: [A], bulkhead: { ...bulkhead, maxConcurrent: 2 } }, { previous: next });
    expect(resized.describe().bulkhead).toMatchObject({ active: 0, queued: 0, maxConcurrent: 2 });
  });

  it('does not keep the cluster it replaced alive once that one is closed', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const cfg = { endpoints: [A], bulkhead, circuitBreaker: breaker, retries: { maxAttempts: 3 } };
    let old: Cluster | undefined = new Cluster('svc', upstream(cfg), { random: seededRandom() });
    const next = make({ ...cfg, retries: { maxAttempts: 2 } }, { previous: old });
    const ref = new WeakRef(old);
    await old.close();
    old = undefined;
    await new Promise((resolve) => setImmediate(resolve));
    gc();
    expect(ref.deref()).toBeUndefined();
    expect(next.describe().circuitBreaker?.state).toBe('closed');
  });

  it('an abandoned reload gives the breaker and the bulkhead back to the cluster it replaced', async () => {
    const oldLog = logSink();
    const old = make({ endpoints: [A], bulkhead, circuitBreaker: breaker }, { logger: oldLog.logger });
    const running = { breakerTicket: NO_TICKET };
    expect(old.admit(running)).toBeUndefined();
    const waiting = old.admit({ breakerTicket: NO_TICKET });
    expect(waiting).toBeInstanceOf(Promise);

    const next = make(
      { endpoints: [A], bulkhead, circuitBreaker: breaker, retries: { maxAttempts: 3 } },
      { previous: old },
    );
    await next.abandon();
    old.release(running);
    await expect(waiting).resolves.toBeUndefined();

    for (let i = 0; i < 3; i++) {
      const e = old.pick()!;
      old.attemptStarted(e);
      old.attemptFinished(e, 'connect_error', 0, 1, running);
    }
    expect(old.describe().circuitBreaker?.state).toBe('open');
    expect(oldLog.messages).toContain('circuit breaker opened');

    // The old cluster owns its bulkhead again: destroying it rejects what still waits.
    const held = old.admit({ breakerTicket: NO_TICKET });
    expect(held).toBeInstanceOf(GatewayError); // the circuit is open now
    await old.destroy();
  });
});
