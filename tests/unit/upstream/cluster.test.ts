import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { AttemptOutcome } from '../../../src/dataplane/forward/upstream-errors.ts';
import { NO_TICKET } from '../../../src/dataplane/upstream/circuit-breaker.ts';
import {
  type AdmissionGate,
  type AdmissionTicket,
  Cluster,
  type ClusterDeps,
} from '../../../src/dataplane/upstream/cluster.ts';
import type { Endpoint } from '../../../src/dataplane/upstream/endpoint.ts';
import { GatewayError } from '../../../src/errors.ts';
import { createMetrics, type GatewayMetrics, renderMetrics } from '../../../src/telemetry/metrics.ts';
import { ManualClock, seededRandom, TLS_FAILURE, tally, upstream } from './helpers.ts';

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

/** A request's admission ticket, as the RequestContext carries it. */
function ticket(): AdmissionTicket {
  return { breakerTicket: NO_TICKET };
}

/** One request with one attempt on `e`: admit, attempt, release. */
function oneRequest(c: Cluster, e: Endpoint, outcome: AttemptOutcome, status: number): void {
  const req = ticket();
  expect(c.admit(req)).toBeUndefined();
  c.attemptStarted(e);
  c.attemptFinished(e, outcome, status, 1, req);
  c.release(req);
}

async function scrape(m: GatewayMetrics): Promise<string> {
  return (await renderMetrics(m, undefined)).body;
}

describe('Cluster: existing surface', () => {
  it('keeps name, config, fingerprint, endpoints, balancer and inFlight', () => {
    const c = make({ endpoints: ['http://127.0.0.1:9001', { url: 'http://127.0.0.1:9002', weight: 3 }] });
    expect(c.name).toBe('svc');
    // The policy only: the endpoints are a live set, not part of what makes a cluster.
    const { endpoints: _endpoints, ...policy } = c.config;
    expect(c.fingerprint).toBe(JSON.stringify(policy));
    expect(c.endpoints.map((e) => [e.id, e.weight])).toEqual([
      ['http://127.0.0.1:9001', 1],
      ['http://127.0.0.1:9002', 3],
    ]);
    expect(c.balancer.kind).toBe('peak_ewma');
    expect(c.endpoints).toContain(c.balancer.pick());
    expect(c.inFlight).toBe(0);
  });

  it('close() and destroy() are safe to call twice', async () => {
    const m = createMetrics({ exemplars: false, version: 'test' });
    const c = make({ endpoints: FOUR }, { metrics: m });
    expect(await scrape(m)).toContain('peregrine_upstream_circuit_state{upstream="svc"}');
    await c.close();
    // Closed: every pool closed, and the upstream gauges no longer read this cluster.
    expect(c.endpoints.map((e) => [e.held, e.pool.closed])).toEqual(FOUR.map(() => [false, true]));
    expect(await scrape(m)).not.toContain('peregrine_upstream_circuit_state{upstream="svc"}');
    await expect(c.close()).resolves.toBeUndefined();
    // destroy() after close() leaves every pool destroyed, and is itself repeatable.
    await c.destroy();
    expect(c.endpoints.every((e) => e.pool.destroyed)).toBe(true);
    await expect(c.destroy()).resolves.toBeUndefined();
  });
});

describe('Cluster: the per-request calls', () => {
  it('the success path: admit, requestStarted, pick, attemptStarted/Finished, release', () => {
    const c = make({ endpoints: FOUR });
    const req = ticket();
    expect(c.admit(req)).toBeUndefined();
    c.requestStarted();
    const e = c.pick({ headers: {}, clientAddress: '10.0.0.1' })!;
    c.attemptStarted(e);
    expect([e.inFlight, c.inFlight]).toEqual([1, 1]);
    c.attemptFinished(e, 'success', 200, 12, req);
    expect([e.inFlight, c.inFlight]).toEqual([0, 0]);
    c.release(req);
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
    for (let i = 0; i < 3; i++) oneRequest(c, c.pick()!, 'connect_error', 0);
    const err = c.admit(ticket());
    expect(err).toBeInstanceOf(GatewayError);
    const ge = err as GatewayError;
    expect([ge.code, ge.status, ge.headers?.['retry-after']]).toEqual(['CIRCUIT_OPEN', 503, '5']);
    clock.advance(3500);
    expect((c.admit(ticket()) as GatewayError).headers?.['retry-after']).toBe('2');
    clock.advance(1500);
    const probe = ticket();
    expect(c.admit(probe)).toBeUndefined(); // the half-open probe
    expect(c.admit(ticket())).toBeInstanceOf(GatewayError);
    const e = c.pick()!;
    c.attemptStarted(e);
    c.attemptFinished(e, 'success', 200, 1, probe);
    expect(c.admit(ticket())).toBeUndefined();
    expect(c.describe().circuitBreaker?.state).toBe('closed');
  });

  it('counts 502/503/504 as breaker failures by default, 500 and 4xx not; a client abort is neutral', () => {
    const clock = new ManualClock();
    const c = make({ circuitBreaker: { consecutiveFailures: 2 } }, { now: clock.now });
    const e = c.endpoints[0]!;
    const attempt = (outcome: 'success' | 'client_abort', status: number) =>
      oneRequest(c, e, outcome, status);
    attempt('success', 500);
    attempt('success', 404);
    attempt('success', 502);
    attempt('client_abort', 0);
    expect(c.describe().circuitBreaker).toMatchObject({ state: 'closed', consecutiveFailures: 1 });
    attempt('success', 503);
    expect(c.describe().circuitBreaker?.state).toBe('open');
  });

  it('client-side outcomes move neither the breaker, outlier detection nor the latency estimate; tls_error does', () => {
    const clock = new ManualClock();
    const c = make(
      { circuitBreaker: { consecutiveFailures: 2 }, outlierDetection: { consecutiveGatewayErrors: 2 } },
      { now: clock.now },
    );
    const e = c.endpoints[0]!;
    oneRequest(c, e, 'success', 200);
    const before = c.describe();
    for (const outcome of ['client_abort', 'client_timeout', 'client_error'] as const) {
      oneRequest(c, e, outcome, 0);
      oneRequest(c, e, outcome, 200);
    }
    const after = c.describe();
    expect(after.circuitBreaker).toEqual(before.circuitBreaker);
    expect(after.endpoints[0]).toEqual(before.endpoints[0]);
    expect(c.inFlight).toBe(0);
    oneRequest(c, e, 'tls_error', 0);
    expect(c.describe().circuitBreaker).toMatchObject({ consecutiveFailures: 1 });
    expect(c.describe().endpoints[0]!.ejection.consecutiveGatewayErrors).toBe(1);
    expect(c.describe().endpoints[0]!.ewmaMs).toBeGreaterThan(before.endpoints[0]!.ewmaMs);
  });

  it('retryDecision: a TLS failure is retried while an endpoint the request has not tried is eligible', () => {
    const c = make({ endpoints: FOUR, retries: { maxAttempts: 5 } });
    c.requestStarted();
    const tls = TLS_FAILURE;
    const [a, b, d, e] = c.endpoints;
    expect(c.retryDecision({ ...tls, attempt: 1, tried: [a!] })).toMatchObject({
      retry: true,
      reason: 'connect_failure',
    });
    expect(c.retryDecision({ ...tls, attempt: 3, tried: [a!, b!, d!] }).retry).toBe(true);
    expect(c.retryDecision({ ...tls, attempt: 4, tried: [a!, b!, d!, e!] })).toEqual({
      retry: false,
      reason: 'no_other_endpoint',
    });
    const single = make({ retries: { maxAttempts: 3 } });
    expect(single.retryDecision({ ...tls, attempt: 1, tried: [single.endpoints[0]!] })).toEqual({
      retry: false,
      reason: 'no_other_endpoint',
    });
  });

  it('tlsFailed: one warn line per endpoint and code per 10 s, then one with the count left out', () => {
    const clock = new ManualClock();
    const { logger, lines } = logSink();
    const c = make({ endpoints: FOUR }, { now: clock.now, logger });
    const [a, b] = c.endpoints;
    const expired = { kind: 'verify', code: 'CERT_HAS_EXPIRED', reason: 'cert_expired' } as const;
    for (let i = 0; i < 5; i++) c.tlsFailed(a!, expired);
    c.tlsFailed(b!, expired);
    const tlsLines = () => lines.filter((l) => String(l.msg).startsWith('upstream TLS'));
    expect(tlsLines()).toHaveLength(2);
    expect(tlsLines()[0]).toMatchObject({
      upstream: 'svc',
      endpoint: a!.id,
      code: 'CERT_HAS_EXPIRED',
      reason: 'cert_expired',
      msg: 'upstream TLS certificate verification failed',
    });
    // Another reason is news: logged at once.
    c.tlsFailed(a!, { kind: 'handshake', code: 'ERR_SSL_WRONG_VERSION_NUMBER', reason: 'not_tls' });
    expect(tlsLines()).toHaveLength(3);
    expect(tlsLines()[2]).toMatchObject({ msg: 'upstream TLS handshake failed', reason: 'not_tls' });
    c.tlsFailed(a!, { kind: 'handshake', code: 'ERR_SSL_WRONG_VERSION_NUMBER', reason: 'not_tls' });
    clock.advance(10_000);
    c.tlsFailed(a!, { kind: 'handshake', code: 'ERR_SSL_WRONG_VERSION_NUMBER', reason: 'not_tls' });
    expect(tlsLines()).toHaveLength(4);
    expect(tlsLines()[3]).toMatchObject({ suppressed: 1 });
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
    expect(s.retries.map((x) => x.value)).toEqual([1, 0, 0, 0, 0, 0]);
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
    oneRequest(c, c.pick()!, 'connect_error', 0);
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

  it('retryBlockedByBreaker refuses a retry once the circuit has left the closed state', () => {
    const c = make({ circuitBreaker: { consecutiveFailures: 1 } });
    expect(c.retryBlockedByBreaker()).toBeUndefined();
    oneRequest(c, c.pick()!, 'connect_error', 0);
    const refusal = c.retryBlockedByBreaker();
    expect([refusal?.code, refusal?.status]).toEqual(['CIRCUIT_OPEN', 503]);
    expect(make({ circuitBreaker: { enabled: false } }).retryBlockedByBreaker()).toBeUndefined();
  });

  it('isRetryableStatus follows retries.statuses', () => {
    const c = make({ retries: { statuses: [503] } });
    expect([c.isRetryableStatus(503), c.isRetryableStatus(502)]).toEqual([true, false]);
  });
});

describe('Cluster: circuit breaker probe accounting', () => {
  /** A breaker that trips on one failure and probes with `probes` requests; open for 5 s. */
  function tripped(probes: number, extra: Record<string, unknown> = {}, deps: ClusterDeps = {}) {
    const clock = new ManualClock();
    const c = make(
      { circuitBreaker: { consecutiveFailures: 1, halfOpenProbes: probes }, ...extra },
      { now: clock.now, ...deps },
    );
    const e = c.endpoints[0]!;
    // A request admitted while closed whose attempt is still running when the circuit trips.
    const stale = ticket();
    expect(c.admit(stale)).toBeUndefined();
    c.attemptStarted(e);
    oneRequest(c, e, 'connect_error', 0);
    expect(c.describe().circuitBreaker?.state).toBe('open');
    clock.advance(5000);
    return { c, e, clock, stale };
  }

  function start(c: Cluster, e: Endpoint): AdmissionTicket {
    const req = ticket();
    expect(c.admit(req)).toBeUndefined();
    c.attemptStarted(e);
    return req;
  }

  const state = (c: Cluster) => c.describe().circuitBreaker!;

  it('a success from a request admitted while closed, arriving while half-open, does not close it', () => {
    const { c, e, stale } = tripped(1);
    const probe = start(c, e);
    c.attemptFinished(e, 'success', 200, 1, stale);
    expect(state(c)).toMatchObject({ state: 'half_open', probesInFlight: 1 });
    expect((c.admit(ticket()) as GatewayError).code).toBe('CIRCUIT_OPEN'); // the probe holds the slot
    c.attemptFinished(e, 'success', 200, 1, probe);
    expect(state(c).state).toBe('closed');
  });

  it('a failure from a request admitted while closed, arriving while half-open, does not reopen it', () => {
    const { c, e, stale } = tripped(1);
    const probe = start(c, e);
    c.attemptFinished(e, 'connect_error', 0, 1, stale);
    expect(state(c)).toMatchObject({ state: 'half_open', trips: 1 });
    c.attemptFinished(e, 'success', 200, 1, probe);
    expect(state(c).state).toBe('closed');
  });

  it('real probes still decide: a failed probe reopens for twice as long, then successful probes close', () => {
    const { c, e, clock } = tripped(2);
    const first = start(c, e);
    c.attemptFinished(e, 'reset', 0, 1, first);
    expect(state(c)).toMatchObject({ state: 'open', trips: 2, retryAfterMs: 10_000 });
    expect((c.admit(ticket()) as GatewayError).headers?.['retry-after']).toBe('10');
    clock.advance(10_000);
    const a = start(c, e);
    const b = start(c, e);
    expect(c.admit(ticket())).toBeInstanceOf(GatewayError);
    c.attemptFinished(e, 'success', 200, 1, a);
    expect(state(c).state).toBe('half_open');
    c.attemptFinished(e, 'success', 200, 1, b);
    expect(state(c).state).toBe('closed');
  });

  it('a probe reports once: a retry of the probe request is not a second probe', () => {
    const { c, e } = tripped(2);
    const probe = start(c, e);
    c.attemptFinished(e, 'success', 500, 1, probe); // not a breaker failure: the probe succeeded
    c.attemptStarted(e); // the retry (500 listed in retries.statuses)
    c.attemptFinished(e, 'success', 200, 1, probe);
    expect(state(c)).toMatchObject({ state: 'half_open', probesInFlight: 0 });
    const other = start(c, e);
    c.attemptFinished(e, 'success', 200, 1, other);
    expect(state(c).state).toBe('closed');
  });

  it('a probe whose client went away gives its slot back once, on the attempt or on release', () => {
    const { c, e } = tripped(2);
    const a = start(c, e);
    const b = start(c, e);
    c.attemptFinished(e, 'client_abort', 0, 1, a);
    c.release(a); // the same request ends: no second give-back
    expect(state(c).probesInFlight).toBe(1);
    const next = start(c, e); // a's slot
    expect(c.admit(ticket())).toBeInstanceOf(GatewayError); // b and next hold both slots
    c.attemptFinished(e, 'success', 200, 1, b);
    c.attemptFinished(e, 'success', 200, 1, next);
    expect(state(c).state).toBe('closed');
  });

  it('a client abort of a request admitted while closed frees no probe slot', () => {
    const { c, e, stale } = tripped(1);
    start(c, e);
    c.attemptFinished(e, 'client_abort', 0, 1, stale);
    c.release(stale);
    expect(state(c).probesInFlight).toBe(1);
    expect(c.admit(ticket())).toBeInstanceOf(GatewayError);
  });

  it('a probe whose request ends without an attempt gives its slot back on release', () => {
    const { c } = tripped(1);
    const probe = ticket();
    expect(c.admit(probe)).toBeUndefined();
    expect(c.admit(ticket())).toBeInstanceOf(GatewayError);
    c.release(probe); // e.g. NO_HEALTHY_ENDPOINT, or the body could not be read
    expect(state(c).probesInFlight).toBe(0);
    expect(c.admit(ticket())).toBeUndefined();
  });

  it('a queued probe that times out in the bulkhead queue gives its slot back', async () => {
    vi.useFakeTimers();
    const clock = new ManualClock();
    const c = make(
      {
        circuitBreaker: { consecutiveFailures: 1, halfOpenProbes: 1 },
        bulkhead: { maxConcurrent: 1, maxQueued: 1, queueTimeout: '200ms' },
      },
      { now: clock.now },
    );
    const e = c.endpoints[0]!;
    const holder = start(c, e); // holds the only bulkhead slot, and trips the breaker
    c.attemptFinished(e, 'connect_error', 0, 1, holder);
    clock.advance(5000);
    const queued = c.admit(ticket()) as Promise<GatewayError | undefined>;
    expect(queued).toBeInstanceOf(Promise);
    expect(state(c).probesInFlight).toBe(1);
    await vi.advanceTimersByTimeAsync(200);
    expect((await queued)?.code).toBe('UPSTREAM_OVERLOADED');
    expect(state(c).probesInFlight).toBe(0);
    c.release(holder);
    expect(c.admit(ticket())).toBeUndefined(); // the probe slot is free
  });

  it('the gauge and describe() report half-open once the open time is up; admit() adds no transition', async () => {
    const m = createMetrics({ exemplars: false, version: 't' });
    const { logger, lines } = logSink();
    const { c, e } = tripped(1, {}, { metrics: m, logger });
    expect(await scrape(m)).toContain('peregrine_upstream_circuit_state{upstream="svc"} 2');
    expect(state(c)).toMatchObject({ state: 'half_open', retryAfterMs: 0, probesInFlight: 0 });
    const probe = start(c, e);
    expect(state(c)).toMatchObject({ state: 'half_open', probesInFlight: 1 });
    let text = await scrape(m);
    expect(text).toContain('peregrine_upstream_circuit_state{upstream="svc"} 2');
    expect(text).toContain(
      'peregrine_upstream_circuit_transitions_total{upstream="svc",from="open",to="half_open"} 1',
    );
    c.attemptFinished(e, 'success', 200, 1, probe);
    text = await scrape(m);
    expect(text).toContain('peregrine_upstream_circuit_state{upstream="svc"} 0');
    expect(lines.map((l) => l.msg)).toEqual([
      'circuit breaker opened',
      'circuit breaker half-open',
      'circuit breaker closed',
    ]);
  });
});

describe('Cluster: bulkhead', () => {
  it('is off by default: admit() never queues or refuses, release() is harmless', () => {
    const c = make({});
    for (let i = 0; i < 1000; i++) expect(c.admit(ticket())).toBeUndefined();
    c.release(ticket());
    expect(c.describe().bulkhead).toBeNull();
  });

  it('admits maxConcurrent, queues maxQueued (FIFO), refuses the rest with UPSTREAM_OVERLOADED', async () => {
    const m = createMetrics({ exemplars: false, version: 't' });
    const c = make({ bulkhead: { maxConcurrent: 2, maxQueued: 2, queueTimeout: '10s' } }, { metrics: m });
    expect(c.admit(ticket())).toBeUndefined();
    expect(c.admit(ticket())).toBeUndefined();
    const q1 = c.admit(ticket());
    const q2 = c.admit(ticket());
    expect(q1).toBeInstanceOf(Promise);
    expect(q2).toBeInstanceOf(Promise);
    const refused = c.admit(ticket()) as GatewayError;
    expect([refused.code, refused.status]).toEqual(['UPSTREAM_OVERLOADED', 503]);
    expect(c.describe().bulkhead).toEqual({ active: 2, queued: 2, maxConcurrent: 2, maxQueued: 2 });
    expect(await scrape(m)).toContain('peregrine_upstream_queued{upstream="svc"} 2');
    const order: string[] = [];
    void (q1 as Promise<unknown>).then((r) => order.push(`q1 ${r}`));
    void (q2 as Promise<unknown>).then((r) => order.push(`q2 ${r}`));
    c.release(ticket());
    await Promise.resolve();
    await Promise.resolve();
    expect(order).toEqual(['q1 undefined']);
    c.release(ticket());
    await vi.waitFor(() => expect(order).toEqual(['q1 undefined', 'q2 undefined']));
    expect(c.describe().bulkhead).toMatchObject({ active: 2, queued: 0 });
    c.release(ticket());
    c.release(ticket());
    expect(c.describe().bulkhead).toMatchObject({ active: 0, queued: 0 });
    expect(m.upstreamResilience('svc').decisions.map((x) => x.value)).toEqual([0, 0, 0, 1]);
  });

  it('a queued request gives up after queueTimeout', async () => {
    vi.useFakeTimers();
    const c = make({ bulkhead: { maxConcurrent: 1, maxQueued: 5, queueTimeout: '200ms' } });
    expect(c.admit(ticket())).toBeUndefined();
    const waiting = c.admit(ticket()) as Promise<GatewayError | undefined>;
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
    const first = ticket();
    expect(c.admit(first)).toBeUndefined(); // holds the only slot
    c.attemptStarted(e);
    c.attemptFinished(e, 'connect_error', 0, 1, first);
    clock.advance(5000);
    expect((c.admit(ticket()) as GatewayError).code).toBe('UPSTREAM_OVERLOADED');
    c.release(first);
    expect(c.admit(ticket())).toBeUndefined(); // the probe slot was not lost
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
      c.attemptFinished(bad, 'success', 503, 2, ticket());
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
        c.attemptFinished(e, 'reset', 0, 1, ticket());
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
    oneRequest(c, e, 'timeout', 0);
    expect(await scrape(m)).toContain('peregrine_upstream_circuit_state{upstream="svc"} 1');
    clock.advance(5000);
    // No request came: the scrape itself sees the open period has ended.
    expect(await scrape(m)).toContain('peregrine_upstream_circuit_state{upstream="svc"} 2');
    oneRequest(c, e, 'success', 200);
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
      aperture: { inUse: 1, size: 1, baseSize: 1, minEndpoints: 12, maxLoad: 4, replica: null },
    });
    expect(d.endpoints).toEqual([
      {
        id: 'http://127.0.0.1:9001',
        source: 'static',
        weight: 2,
        zone: null,
        version: null,
        metadata: {},
        inFlight: 0,
        state: 'healthy',
        eligible: true,
        inUse: true,
        health: null,
        ejection: { ejected: false, until: null, count: 0, consecutiveGatewayErrors: 0, consecutive5xx: 0 },
        ewmaMs: expect.any(Number),
      },
    ]);
    expect(d.endpoints[0]!.ewmaMs).toBeLessThanOrEqual(30);
    expect(JSON.parse(JSON.stringify(d))).toEqual(d);
  });
});

describe('Cluster: the admission gate (upstream-side policies)', () => {
  const refusal = new GatewayError('UPSTREAM_OVERLOADED', 'gate says no');

  function gate(verdicts: (GatewayError | undefined | Promise<GatewayError | undefined>)[]): AdmissionGate & {
    asked: number;
  } {
    return {
      name: 'ceiling',
      asked: 0,
      admit() {
        return verdicts[this.asked++];
      },
    };
  }

  it('is asked first: what it refuses takes no breaker probe and no bulkhead slot', () => {
    const c = make({
      bulkhead: { maxConcurrent: 1, maxQueued: 0 },
      circuitBreaker: { consecutiveFailures: 1, openDuration: '10s' },
    });
    const g = gate([refusal, undefined]);
    expect(c.admit(ticket(), g)).toBe(refusal);
    expect(c.describe().bulkhead).toMatchObject({ active: 0 });
    const req = ticket();
    expect(c.admit(req, g)).toBeUndefined();
    expect(c.describe().bulkhead).toMatchObject({ active: 1 });
    expect(g.asked).toBe(2);
    c.release(req);
  });

  it('a gate that must wait settles before the breaker and bulkhead are asked', async () => {
    const c = make({ bulkhead: { maxConcurrent: 1, maxQueued: 0 } });
    let pass!: (v: GatewayError | undefined) => void;
    const g = gate([new Promise((r) => (pass = r)), Promise.resolve(refusal)]);
    const first = c.admit(ticket(), g) as Promise<GatewayError | undefined>;
    expect(first).toBeInstanceOf(Promise);
    expect(c.describe().bulkhead).toMatchObject({ active: 0 });
    pass(undefined);
    expect(await first).toBeUndefined();
    expect(c.describe().bulkhead).toMatchObject({ active: 1 });
    expect(await c.admit(ticket(), g)).toBe(refusal);
    expect(c.describe().bulkhead).toMatchObject({ active: 1 });
  });
});
