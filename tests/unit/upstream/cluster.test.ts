import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Cluster, type ClusterDeps } from '../../../src/dataplane/upstream/cluster.ts';
import { GatewayError } from '../../../src/errors.ts';
import { createMetrics, type GatewayMetrics, renderMetrics } from '../../../src/telemetry/metrics.ts';
import { ManualClock, seededRandom, tally, upstream } from './helpers.ts';

const clusters: Cluster[] = [];
afterEach(async () => {
  vi.useRealTimers();
  await Promise.all(clusters.splice(0).map((c) => c.close()));
});

function logSink(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => lines.push(JSON.parse(s)) });
  return { logger, lines };
}

function make(input: Record<string, unknown>, deps: ClusterDeps = {}, name = 'svc'): Cluster {
  const c = new Cluster(name, upstream(input), { random: seededRandom(), ...deps });
  clusters.push(c);
  return c;
}

const FOUR = [
  'http://127.0.0.1:9001',
  'http://127.0.0.1:9002',
  'http://127.0.0.1:9003',
  'http://127.0.0.1:9004',
];

async function scrape(m: GatewayMetrics): Promise<string> {
  return (await renderMetrics(m, undefined)).body;
}

describe('Cluster: existing surface', () => {
  it('keeps name, config, fingerprint, endpoints, balancer and inFlight', () => {
    const c = make({ endpoints: ['http://127.0.0.1:9001', { url: 'http://127.0.0.1:9002', weight: 3 }] });
    expect(c.name).toBe('svc');
    expect(c.fingerprint).toBe(JSON.stringify(c.config));
    expect(c.endpoints.map((e) => [e.id, e.weight])).toEqual([
      ['http://127.0.0.1:9001', 1],
      ['http://127.0.0.1:9002', 3],
    ]);
    expect(c.balancer.kind).toBe('peak_ewma');
    expect(c.endpoints).toContain(c.balancer.pick());
    expect(c.inFlight).toBe(0);
  });

  it('close() and destroy() are safe to call twice', async () => {
    const c = make({});
    await c.close();
    await c.close();
    await c.destroy();
  });
});

describe('Cluster: the per-request calls', () => {
  it('the success path: admit, requestStarted, pick, attemptStarted/Finished, release', () => {
    const c = make({ endpoints: FOUR });
    expect(c.admit()).toBeUndefined();
    c.requestStarted();
    const e = c.pick({ headers: {}, clientAddress: '10.0.0.1' })!;
    c.attemptStarted(e);
    expect([e.inFlight, c.inFlight]).toEqual([1, 1]);
    c.attemptFinished(e, 'success', 200, 12);
    expect([e.inFlight, c.inFlight]).toEqual([0, 0]);
    c.release();
  });

  it('a retry goes to another endpoint', () => {
    const c = make({ endpoints: FOUR });
    const first = c.pick()!;
    for (let i = 0; i < 200; i++) expect(c.pick({ tried: [first] })).not.toBe(first);
  });

  it('opens the circuit after consecutive failures: CIRCUIT_OPEN 503 with Retry-After, then a probe', () => {
    const clock = new ManualClock();
    const m = createMetrics({ exemplars: false, version: 't' });
    const c = make(
      { endpoints: FOUR, circuitBreaker: { consecutiveFailures: 3 } },
      { now: clock.now, metrics: m },
    );
    for (let i = 0; i < 3; i++) {
      const e = c.pick()!;
      c.attemptStarted(e);
      c.attemptFinished(e, 'connect_error', 0, 1);
    }
    const err = c.admit();
    expect(err).toBeInstanceOf(GatewayError);
    const ge = err as GatewayError;
    expect([ge.code, ge.status, ge.headers?.['retry-after']]).toEqual(['CIRCUIT_OPEN', 503, '5']);
    clock.advance(3500);
    expect((c.admit() as GatewayError).headers?.['retry-after']).toBe('2');
    clock.advance(1500);
    expect(c.admit()).toBeUndefined(); // the half-open probe
    expect(c.admit()).toBeInstanceOf(GatewayError);
    const e = c.pick()!;
    c.attemptStarted(e);
    c.attemptFinished(e, 'success', 200, 1);
    expect(c.admit()).toBeUndefined();
    expect(c.describe().circuitBreaker?.state).toBe('closed');
  });

  it('counts 502/503/504 as breaker failures by default, 500 and 4xx not; a client abort is neutral', () => {
    const clock = new ManualClock();
    const c = make({ circuitBreaker: { consecutiveFailures: 2 } }, { now: clock.now });
    const e = c.endpoints[0]!;
    const attempt = (outcome: 'success' | 'client_abort', status: number) => {
      c.attemptStarted(e);
      c.attemptFinished(e, outcome, status, 1);
    };
    attempt('success', 500);
    attempt('success', 404);
    attempt('success', 502);
    attempt('client_abort', 0);
    expect(c.describe().circuitBreaker).toMatchObject({ state: 'closed', consecutiveFailures: 1 });
    attempt('success', 503);
    expect(c.describe().circuitBreaker?.state).toBe('open');
  });

  it('retryDecision: retries a connect failure once, counts it, then stops at maxAttempts', () => {
    const m = createMetrics({ exemplars: false, version: 't' });
    const c = make({ endpoints: FOUR }, { metrics: m });
    c.requestStarted();
    const base = {
      method: 'GET',
      outcome: 'connect_error',
      status: 0,
      bytesSent: false,
      bodyReplayable: true,
      elapsedMs: 5,
    } as const;
    const d = c.retryDecision({ ...base, attempt: 1 });
    expect(d).toMatchObject({ retry: true, reason: 'connect_failure' });
    if (d.retry) {
      expect(d.delayMs).toBeGreaterThanOrEqual(0);
      expect(d.delayMs).toBeLessThanOrEqual(25);
    }
    expect(c.retryDecision({ ...base, attempt: 2 })).toEqual({ retry: false, reason: 'max_attempts' });
    const s = m.upstreamResilience('svc');
    expect(s.decisions.map((x) => x.value)).toEqual([1, 0, 0, 0]);
    expect(s.retries.map((x) => x.value)).toEqual([1, 0, 0, 0, 0]);
  });

  it('retryDecision: the budget runs out under a flood of failures and says so', () => {
    const clock = new ManualClock();
    const m = createMetrics({ exemplars: false, version: 't' });
    const c = make(
      { endpoints: FOUR, retries: { budget: { ratio: 0.1, minRetriesPerSecond: 1 } } },
      { now: clock.now, metrics: m },
    );
    const reasons = new Map<string, number>();
    for (let i = 0; i < 100; i++) {
      c.requestStarted();
      const d = c.retryDecision({
        attempt: 1,
        method: 'GET',
        outcome: 'reset',
        status: 0,
        bytesSent: true,
        bodyReplayable: true,
        elapsedMs: 1,
      });
      reasons.set(d.reason, (reasons.get(d.reason) ?? 0) + 1);
    }
    // 1 from the starting floor + 100 × 0.1.
    expect(reasons.get('reset')).toBe(11);
    expect(reasons.get('budget_exhausted')).toBe(89);
    expect(m.upstreamResilience('svc').decisions.map((x) => x.value)).toEqual([11, 89, 0, 0]);
    expect(c.describe().retryBudget).toMatchObject({ remaining: 0, ratio: 0.1 });
  });

  it('retryDecision refuses while the circuit is open', () => {
    const c = make({ circuitBreaker: { consecutiveFailures: 1 } });
    const e = c.pick()!;
    c.attemptStarted(e);
    c.attemptFinished(e, 'connect_error', 0, 1);
    const d = c.retryDecision({
      attempt: 1,
      method: 'GET',
      outcome: 'connect_error',
      status: 0,
      bytesSent: false,
      bodyReplayable: true,
      elapsedMs: 1,
    });
    expect(d).toEqual({ retry: false, reason: 'circuit_open' });
  });

  it('isRetryableStatus follows retries.statuses', () => {
    const c = make({ retries: { statuses: [503] } });
    expect([c.isRetryableStatus(503), c.isRetryableStatus(502)]).toEqual([true, false]);
  });
});

describe('Cluster: bulkhead', () => {
  it('is off by default: admit() never queues or refuses, release() is harmless', () => {
    const c = make({});
    for (let i = 0; i < 1000; i++) expect(c.admit()).toBeUndefined();
    c.release();
    expect(c.describe().bulkhead).toBeNull();
  });

  it('admits maxConcurrent, queues maxQueued (FIFO), refuses the rest with UPSTREAM_OVERLOADED', async () => {
    const m = createMetrics({ exemplars: false, version: 't' });
    const c = make({ bulkhead: { maxConcurrent: 2, maxQueued: 2, queueTimeout: '10s' } }, { metrics: m });
    expect(c.admit()).toBeUndefined();
    expect(c.admit()).toBeUndefined();
    const q1 = c.admit();
    const q2 = c.admit();
    expect(q1).toBeInstanceOf(Promise);
    expect(q2).toBeInstanceOf(Promise);
    const refused = c.admit() as GatewayError;
    expect([refused.code, refused.status]).toEqual(['UPSTREAM_OVERLOADED', 503]);
    expect(c.describe().bulkhead).toEqual({ active: 2, queued: 2, maxConcurrent: 2, maxQueued: 2 });
    expect(await scrape(m)).toContain('peregrine_upstream_queued{upstream="svc"} 2');
    const order: string[] = [];
    void (q1 as Promise<unknown>).then((r) => order.push(`q1 ${r}`));
    void (q2 as Promise<unknown>).then((r) => order.push(`q2 ${r}`));
    c.release();
    await Promise.resolve();
    await Promise.resolve();
    expect(order).toEqual(['q1 undefined']);
    c.release();
    await vi.waitFor(() => expect(order).toEqual(['q1 undefined', 'q2 undefined']));
    expect(c.describe().bulkhead).toMatchObject({ active: 2, queued: 0 });
    c.release();
    c.release();
    expect(c.describe().bulkhead).toMatchObject({ active: 0, queued: 0 });
    expect(m.upstreamResilience('svc').decisions.map((x) => x.value)).toEqual([0, 0, 0, 1]);
  });

  it('a queued request gives up after queueTimeout', async () => {
    vi.useFakeTimers();
    const c = make({ bulkhead: { maxConcurrent: 1, maxQueued: 5, queueTimeout: '200ms' } });
    expect(c.admit()).toBeUndefined();
    const waiting = c.admit() as Promise<GatewayError | undefined>;
    await vi.advanceTimersByTimeAsync(200);
    const err = await waiting;
    expect(err?.code).toBe('UPSTREAM_OVERLOADED');
    expect(c.describe().bulkhead).toMatchObject({ active: 1, queued: 0 });
  });

  it('a half-open probe refused by the bulkhead is given back', () => {
    const clock = new ManualClock();
    const c = make(
      { circuitBreaker: { consecutiveFailures: 1 }, bulkhead: { maxConcurrent: 1, maxQueued: 0 } },
      { now: clock.now },
    );
    const e = c.pick()!;
    expect(c.admit()).toBeUndefined(); // holds the only slot
    c.attemptStarted(e);
    c.attemptFinished(e, 'connect_error', 0, 1);
    clock.advance(5000);
    expect((c.admit() as GatewayError).code).toBe('UPSTREAM_OVERLOADED');
    c.release();
    expect(c.admit()).toBeUndefined(); // the probe slot was not lost
  });
});

describe('Cluster: outlier ejection, eligibility, panic mode, telemetry', () => {
  it('ejects an endpoint from balancing, logs and counts it, and brings it back', async () => {
    vi.useFakeTimers();
    const m = createMetrics({ exemplars: false, version: 't' });
    const { logger, lines } = logSink();
    // Round robin: under peak-EWMA the returned endpoint is eased back in (its failure penalty
    // decays), which is the balancer's business, not this test's.
    const c = make(
      { endpoints: FOUR, circuitBreaker: { enabled: false }, balancer: { kind: 'round_robin' } },
      { metrics: m, logger, now: () => Date.now() },
    );
    const bad = c.endpoints[1]!;
    for (let i = 0; i < 5; i++) {
      c.attemptStarted(bad);
      c.attemptFinished(bad, 'success', 503, 2);
    }
    expect(bad.ejected).toBe(true);
    expect(tally(500, () => c.pick()).has(bad.id)).toBe(false);
    const text = await scrape(m);
    expect(text).toContain(`peregrine_upstream_ejections_total{upstream="svc",endpoint="${bad.id}"} 1`);
    expect(text).toContain('peregrine_upstream_ejected_endpoints{upstream="svc"} 1');
    expect(text).toContain('peregrine_upstream_endpoints{upstream="svc",state="ejected"} 1');
    expect(text).toContain('peregrine_upstream_endpoints{upstream="svc",state="healthy"} 3');
    expect(text).toContain('peregrine_upstream_panic_mode{upstream="svc"} 0');
    const d = c.describe().endpoints[1]!;
    expect(d).toMatchObject({ state: 'ejected', eligible: false, ejection: { ejected: true, count: 1 } });
    expect(Date.parse(d.ejection.until!) - Date.now()).toBe(30_000);

    vi.advanceTimersByTime(30_000);
    expect(bad.ejected).toBe(false);
    expect(tally(500, () => c.pick()).has(bad.id)).toBe(true);
    const msgs = lines.map((l) => `${l.msg} ${l.upstream} ${l.endpoint ?? ''}`);
    expect(msgs).toEqual([`endpoint ejected svc ${bad.id}`, `endpoint returned from ejection svc ${bad.id}`]);
    expect(lines[0]).toMatchObject({
      level: 40,
      reason: '5 consecutive gateway errors',
      ejectedForMs: 30_000,
    });
  });

  it('panic mode: when eligible endpoints fall below the threshold, balance over all of them', () => {
    vi.useFakeTimers();
    const { logger, lines } = logSink();
    const c = make(
      { endpoints: FOUR, outlierDetection: { maxEjectionPercent: 100 }, circuitBreaker: { enabled: false } },
      { logger, now: () => Date.now() },
    );
    const eject = (i: number) => {
      const e = c.endpoints[i]!;
      for (let k = 0; k < 5; k++) {
        c.attemptStarted(e);
        c.attemptFinished(e, 'reset', 0, 1);
      }
    };
    eject(0);
    eject(1);
    expect(c.panic).toBe(false); // 2 of 4 eligible: 50% is not below 50%
    expect(tally(400, () => c.pick()).size).toBe(2);
    eject(2);
    expect(c.panic).toBe(true);
    expect(tally(400, () => c.pick()).size).toBe(4);
    expect(c.describe()).toMatchObject({ panic: true });
    vi.advanceTimersByTime(30_000);
    expect(c.panic).toBe(false);
    expect(lines.map((l) => l.msg)).toContain(
      'upstream panic mode: too few eligible endpoints, balancing over all of them',
    );
    expect(lines.map((l) => l.msg)).toContain('upstream panic mode ended');
  });

  it('logs and counts each circuit transition; the state gauge reads the live state', async () => {
    const clock = new ManualClock();
    const m = createMetrics({ exemplars: false, version: 't' });
    const { logger, lines } = logSink();
    const c = make({ circuitBreaker: { consecutiveFailures: 1 } }, { metrics: m, logger, now: clock.now });
    const e = c.endpoints[0]!;
    c.attemptStarted(e);
    c.attemptFinished(e, 'timeout', 0, 1);
    expect(await scrape(m)).toContain('peregrine_upstream_circuit_state{upstream="svc"} 1');
    clock.advance(5000);
    // No request came: the scrape itself sees the open period has ended.
    expect(await scrape(m)).toContain('peregrine_upstream_circuit_state{upstream="svc"} 2');
    c.admit();
    c.attemptStarted(e);
    c.attemptFinished(e, 'success', 200, 1);
    const text = await scrape(m);
    expect(text).toContain('peregrine_upstream_circuit_state{upstream="svc"} 0');
    expect(text).toContain(
      'peregrine_upstream_circuit_transitions_total{upstream="svc",from="closed",to="open"} 1',
    );
    expect(text).toContain(
      'peregrine_upstream_circuit_transitions_total{upstream="svc",from="open",to="half_open"} 1',
    );
    expect(text).toContain(
      'peregrine_upstream_circuit_transitions_total{upstream="svc",from="half_open",to="closed"} 1',
    );
    expect(lines.map((l) => [l.msg, l.level])).toEqual([
      ['circuit breaker opened', 40],
      ['circuit breaker half-open', 30],
      ['circuit breaker closed', 30],
    ]);
  });

  it('publishes zeroed decision and retry series, the retry budget, and stops when closed', async () => {
    const m = createMetrics({ exemplars: false, version: 't' });
    const c = make({}, { metrics: m });
    let text = await scrape(m);
    for (const d of ['retry', 'budget_exhausted', 'circuit_open', 'overloaded'])
      expect(text).toContain(`peregrine_upstream_decisions_total{upstream="svc",decision="${d}"} 0`);
    for (const r of ['connect_failure', 'refused', 'reset', 'timeout', 'status'])
      expect(text).toContain(`peregrine_upstream_retries_total{upstream="svc",reason="${r}"} 0`);
    expect(text).toContain('peregrine_upstream_retry_budget_remaining{upstream="svc"} 3');
    // A reload builds a new Cluster of the same name: it takes over the gauges; closing the old
    // one does not remove them, and the counters are the same series.
    const next = make({ retries: { budget: { minRetriesPerSecond: 7 } } }, { metrics: m });
    await c.close();
    text = await scrape(m);
    expect(text).toContain('peregrine_upstream_retry_budget_remaining{upstream="svc"} 7');
    expect(text.match(/peregrine_upstream_decisions_total\{upstream="svc",decision="retry"\}/g)).toHaveLength(
      1,
    );
    await next.close();
    expect(await scrape(m)).not.toContain('peregrine_upstream_retry_budget_remaining{upstream="svc"}');
  });

  it('describe() has per-endpoint health, ejection, EWMA, in-flight and weight, and the upstream state', () => {
    const c = make({
      endpoints: [{ url: 'http://127.0.0.1:9001', weight: 2 }],
      balancer: { kind: 'peak_ewma' },
    });
    const d = c.describe();
    expect(d).toMatchObject({
      name: 'svc',
      balancer: 'peak_ewma',
      panic: false,
      inFlight: 0,
      circuitBreaker: { state: 'closed', trips: 0 },
      retryBudget: { remaining: 3, ratio: 0.2, minRetriesPerSecond: 3, windowMs: 10_000 },
      bulkhead: null,
    });
    expect(d.endpoints).toEqual([
      {
        id: 'http://127.0.0.1:9001',
        weight: 2,
        inFlight: 0,
        state: 'healthy',
        eligible: true,
        health: null,
        ejection: { ejected: false, until: null, count: 0, consecutiveGatewayErrors: 0, consecutive5xx: 0 },
        ewmaMs: expect.any(Number),
      },
    ]);
    expect(d.endpoints[0]!.ewmaMs).toBeLessThanOrEqual(30);
    expect(JSON.parse(JSON.stringify(d))).toEqual(d);
  });
});
