/**
 * An upstream's endpoints as a live set: add, update (weight, zone, metadata), drain and remove,
 * under every balancer. What must hold: a change touches only the endpoints it names. The others
 * keep their Endpoint objects and pools (by reference), latency estimates, ejections and in-flight
 * counts; the cluster keeps its breaker and budget; removed endpoints are never picked again and
 * their pools close (gracefully: the attempts in flight finish, tested with real servers in
 * tests/integration/discovery.test.ts).
 */
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { NO_TICKET } from '../../../src/dataplane/upstream/circuit-breaker.ts';
import { type Cluster, SET_LOG_INTERVAL_MS } from '../../../src/dataplane/upstream/cluster.ts';
import type { Endpoint } from '../../../src/dataplane/upstream/endpoint.ts';
import { createMetrics, renderMetrics } from '../../../src/telemetry/metrics.ts';
import { BALANCER_KINDS, clusterFactory, ManualClock, ORIGINS, TLS_FAILURE, tally } from './helpers.ts';

const { make, destroyAll } = clusterFactory();
afterEach(async () => {
  vi.useRealTimers();
  await destroyAll();
});

const { A, B, C, D, E } = ORIGINS;

const isOpen = (e: Endpoint): boolean => !e.pool.closed && !e.pool.destroyed;

function attempt(c: Cluster, e: Endpoint, outcome: 'success' | 'reset', latencyMs: number) {
  const req = { breakerTicket: NO_TICKET };
  c.attemptStarted(e);
  return c.attemptFinished(e, outcome, outcome === 'success' ? 200 : 0, latencyMs, req);
}

/** Everything per endpoint a set change must leave alone, as plain values (and the pool itself). */
function stateOf(e: Endpoint) {
  return {
    pool: e.pool,
    rttMs: e.rttMs,
    rttAt: e.rttAt,
    inFlight: e.inFlight,
    ejected: e.ejected,
    ejectedUntil: e.ejectedUntil,
    ejections: e.ejections,
    healthy: e.healthy,
    weight: e.weight,
  };
}

describe.each(BALANCER_KINDS)('live endpoint set under $kind', (balancer) => {
  const base = {
    balancer,
    circuitBreaker: { consecutiveFailures: 50 },
    outlierDetection: { consecutiveGatewayErrors: 3, maxEjectionPercent: 50 },
  };
  const key = (i: number) => ({ hashKey: `k${i}`, headers: { 'x-key': `k${i}` } });

  it('adding endpoints touches no other: objects, pools, latency estimates, ejections, in-flight and the breaker stay', () => {
    const clock = new ManualClock();
    const c = make({ endpoints: [A, B, C], ...base }, { now: clock.now });
    const [a, b, cc] = c.endpoints;
    attempt(c, a!, 'success', 120); // a latency estimate of its own
    for (let i = 0; i < 3; i++) attempt(c, b!, 'reset', 1); // b ejected
    c.attemptStarted(cc!); // one attempt in flight on c
    expect(b!.ejected).toBe(true);
    const before = c.endpoints.map(stateOf);
    const breaker = c.describe().circuitBreaker;

    const change = c.applyEndpoints([{ url: A }, { url: B }, { url: C }, { url: D }, { url: E }]);
    expect(change).toEqual({ added: [D, E], removed: [], updated: [] });
    expect(c.endpoints.slice(0, 3)).toEqual([a, b, cc]);
    expect(c.endpoints[0]).toBe(a);
    expect(c.endpoints.slice(0, 3).map(stateOf)).toEqual(before);
    expect(c.describe().circuitBreaker).toEqual(breaker);
    expect(c.describe().endpoints.map((d) => d.state)).toEqual([
      'healthy',
      'ejected',
      'healthy',
      'healthy',
      'healthy',
    ]);
    // The newcomers take traffic; the ejected one still gets none.
    const picked = tally(400, (i) => c.pick(key(i)));
    expect(picked.has(D) && picked.has(E)).toBe(true);
    expect(picked.has(B)).toBe(false);
    // b's ejection still ends on its own timer-driven schedule (not reset by the change).
    expect(b!.ejectedUntil).toBe(before[1]!.ejectedUntil);
  });

  it('removing an endpoint touches no other; it is never picked again and its pool closes', async () => {
    const clock = new ManualClock();
    const c = make({ endpoints: [A, B, C, D], ...base }, { now: clock.now });
    const [a, b, cc, d] = c.endpoints;
    attempt(c, a!, 'success', 80);
    for (let i = 0; i < 3; i++) attempt(c, d!, 'reset', 1);
    expect(d!.ejected).toBe(true);
    const kept = [a!, b!, d!].map(stateOf);
    const pools = [a!, b!, d!].map((e) => e.pool);

    expect(c.removeEndpoint(C)).toBe(true);
    expect(c.removeEndpoint(C)).toBe(false);
    expect(c.endpoints).toEqual([a, b, d]);
    expect([a!, b!, d!].map(stateOf)).toEqual(kept);
    expect([a!, b!, d!].map((e) => e.pool)).toEqual(pools);
    expect(cc!.removed).toBe(true);
    expect(tally(300, (i) => c.pick(key(i))).has(C)).toBe(false);
    // Closed gracefully: attempts in flight would finish (tests/integration/discovery.test.ts).
    await vi.waitFor(() => expect(cc!.pool.closed).toBe(true));
    expect([a!, b!, d!].every(isOpen)).toBe(true);
  });

  it('drain stops new picks at once and keeps everything else; undrain brings it back', () => {
    const c = make({ endpoints: [A, B, C], ...base });
    const [a, b, cc] = c.endpoints;
    // The others slow, so that peak-EWMA wants b back after the drain.
    attempt(c, a!, 'success', 500);
    attempt(c, cc!, 'success', 500);
    const before = stateOf(b!);
    expect(c.drainEndpoint(B)).toBe(true);
    expect(b!.draining).toBe(true);
    expect(c.endpoints).toContain(b);
    expect(c.describe().endpoints[1]).toMatchObject({ id: B, state: 'draining', eligible: false });
    expect(tally(300, (i) => c.pick(key(i))).has(B)).toBe(false);
    expect(stateOf(b!)).toEqual(before);
    expect(c.updateEndpoint(B, { state: 'active' })).toBe(true);
    expect(tally(300, (i) => c.pick(key(i))).has(B)).toBe(true);
    expect(c.endpoints[0]).toBe(a);
  });

  it('a weight change reweights in place: same object, same pool, the new share', () => {
    const c = make({ endpoints: [A, B], ...base });
    const [a, b] = c.endpoints;
    const change = c.applyEndpoints([{ url: A }, { url: B, weight: 9, zone: 'eu-1', metadata: { v: '2' } }]);
    expect(change).toEqual({ added: [], removed: [], updated: [B] });
    expect(c.endpoints).toEqual([a, b]);
    expect([b!.weight, b!.zone, b!.metadata]).toEqual([9, 'eu-1', { v: '2' }]);
    const counts = tally(2000, (i) => c.pick(key(i)));
    expect(counts.get(B)!).toBeGreaterThan(counts.get(A)! * 3);
  });
});

describe('live endpoint set: the rest of the contract', () => {
  it('applyEndpoints is a diff by origin; a changed URL or host for the same origin replaces only that endpoint', () => {
    const c = make({ endpoints: [A, B, C] });
    const [a, b, cc] = c.endpoints;
    const change = c.applyEndpoints([
      { url: A },
      { url: 'http://user:pw@127.0.0.1:9002' },
      { url: C, host: 'users.internal:9003' },
      { url: A, weight: 5 }, // a repeated origin counts once
    ]);
    expect(change).toEqual({ added: [B, C], removed: [B, C], updated: [] });
    expect(c.endpoints[0]).toBe(a);
    expect(c.endpoint(B)).not.toBe(b);
    expect(c.endpoint(C)).not.toBe(cc);
    expect(c.endpoint(C)!.host).toBe('users.internal:9003');
    expect([b!.removed, cc!.removed, a!.removed]).toEqual([true, true, false]);
    expect(a!.weight).toBe(1);
    // The same list again changes nothing.
    expect(
      c.applyEndpoints([
        { url: A },
        { url: 'http://user:pw@127.0.0.1:9002' },
        { url: C, host: 'users.internal:9003' },
      ]),
    ).toEqual({
      added: [],
      removed: [],
      updated: [],
    });
  });

  it('an endpoint whose source changed it while an attempt was in flight puts an event on that request', () => {
    const c = make({ endpoints: [A, B, C] });
    const [a, b, cc] = c.endpoints;
    for (const e of [a!, b!, cc!]) c.attemptStarted(e);
    c.removeEndpoint(A);
    c.drainEndpoint(B);
    const req = { breakerTicket: NO_TICKET };
    expect(c.attemptFinished(a!, 'success', 200, 1, req)).toEqual([
      { name: 'peregrine.endpoint_removed', attributes: { endpoint: A, source: 'static' } },
    ]);
    expect(c.attemptFinished(b!, 'success', 200, 1, req)).toEqual([
      { name: 'peregrine.endpoint_draining', attributes: { endpoint: B, source: 'static' } },
    ]);
    expect(c.attemptFinished(cc!, 'success', 200, 1, req)).toBeUndefined();
    expect([a!.inFlight, b!.inFlight, c.inFlight]).toEqual([0, 0, 0]);
  });

  it('a removed endpoint is never ejected by the failures of its last attempts, nor counted against the cap', () => {
    const c = make({
      endpoints: [A, B],
      outlierDetection: { consecutiveGatewayErrors: 2, maxEjectionPercent: 50 },
    });
    const [a, b] = c.endpoints;
    c.attemptStarted(a!);
    c.attemptStarted(a!);
    c.removeEndpoint(A);
    const req = { breakerTicket: NO_TICKET };
    c.attemptFinished(a!, 'reset', 0, 1, req);
    c.attemptFinished(a!, 'reset', 0, 1, req);
    expect(a!.ejected).toBe(false);
    // With one endpoint left, 50% lets none be ejected; after one joins, one may be.
    for (let i = 0; i < 2; i++) attempt(c, b!, 'reset', 1);
    expect(b!.ejected).toBe(false);
    c.addEndpoint({ url: C });
    for (let i = 0; i < 2; i++) attempt(c, b!, 'reset', 1);
    expect(b!.ejected).toBe(true);
    expect(c.describe().endpoints.map((d) => d.state)).toEqual(['ejected', 'healthy']);
  });

  it('removing an ejected endpoint frees its place under the cap for another outlier', () => {
    vi.useFakeTimers();
    const now = (): number => Date.now();
    const c = make(
      { endpoints: [A, B, C, D], outlierDetection: { consecutiveGatewayErrors: 1, maxEjectionPercent: 25 } },
      { now },
    );
    const [a, b] = c.endpoints;
    attempt(c, a!, 'reset', 1);
    attempt(c, b!, 'reset', 1);
    expect([a!.ejected, b!.ejected]).toEqual([true, false]);
    c.removeEndpoint(A);
    c.addEndpoint({ url: E });
    attempt(c, b!, 'reset', 1);
    expect(b!.ejected).toBe(true);
    // The removed endpoint's ejection timer is gone: nothing fires into the cluster for it.
    vi.advanceTimersByTime(300_000);
    expect(b!.ejected).toBe(false);
  });

  it('draining endpoints are outside panic mode: never picked, and not counted in the threshold', () => {
    const c = make({ endpoints: [A, B, C, D], balancer: { kind: 'round_robin', panicThreshold: 50 } });
    const [a, b, cc] = c.endpoints;
    c.drainEndpoint(A);
    c.drainEndpoint(B);
    cc!.healthy = false;
    c.updateEndpoint(D, { weight: 1 }); // unchanged: no refresh needed, and nothing breaks
    c.addEndpoint({ url: E });
    // 3 active endpoints, 2 eligible (D, E): 66% ≥ 50%, no panic.
    expect(c.panic).toBe(false);
    expect(new Set(tally(60, () => c.pick()).keys())).toEqual(new Set([D, E]));
    c.removeEndpoint(E);
    // 2 active, 1 eligible: 50% is not below 50%.
    expect(c.panic).toBe(false);
    c.drainEndpoint(D);
    // Only C is active, unhealthy: panic, and only C (not the draining ones) is picked.
    expect(c.panic).toBe(true);
    expect(new Set(tally(30, () => c.pick()).keys())).toEqual(new Set([C]));
    expect(a!.draining && b!.draining).toBe(true);
  });

  it('a TLS failure is retried only toward an endpoint the balancer could pick: never a draining one, in panic mode too', () => {
    const c = make({
      endpoints: [A, B, C],
      balancer: { kind: 'round_robin', panicThreshold: 50 },
      retries: { maxAttempts: 5 },
    });
    const [, b, cc] = c.endpoints;
    b!.healthy = false;
    cc!.healthy = false;
    c.drainEndpoint(A);
    // B and C active, neither eligible: panic over the two of them, A (draining) is no candidate.
    expect(c.panic).toBe(true);
    c.requestStarted();
    const tls = TLS_FAILURE;
    expect(c.retryDecision({ ...tls, attempt: 1, tried: [b!] }).retry).toBe(true);
    expect(c.retryDecision({ ...tls, attempt: 2, tried: [b!, cc!] })).toEqual({
      retry: false,
      reason: 'no_other_endpoint',
    });
    c.removeEndpoint(C);
    expect(c.retryDecision({ ...tls, attempt: 1, tried: [b!] })).toEqual({
      retry: false,
      reason: 'no_other_endpoint',
    });
  });

  it('says why it has nothing to pick', () => {
    const c = make({ endpoints: [A, B], balancer: { kind: 'round_robin', panicThreshold: 0 } });
    c.endpoints[0]!.healthy = false;
    c.drainEndpoint(B);
    expect(c.pick()).toBeUndefined();
    expect(c.noEndpointReason()).toBe(
      'upstream svc: none of its 1 endpoints is eligible (unhealthy or ejected)',
    );
    c.drainEndpoint(A);
    expect(c.noEndpointReason()).toBe('upstream svc: all 2 endpoints are draining');
    c.applyEndpoints([]);
    expect(c.noEndpointReason()).toBe('upstream svc has no endpoints');
    c.sourceNote = 'dns users.internal A port 80: nxdomain: ENOTFOUND';
    expect(c.noEndpointReason()).toBe(
      'upstream svc has no endpoints (dns users.internal A port 80: nxdomain: ENOTFOUND)',
    );
  });

  it('health checks follow the set: a newcomer is checked, a removed endpoint no longer', () => {
    const c = make({ endpoints: [A], healthCheck: { interval: '1h' } });
    c.addEndpoint({ url: B });
    const d = c.describe().endpoints;
    expect(d.map((e) => e.id)).toEqual([A, B]);
    expect(d[1]!.health).toEqual({
      consecutiveSuccesses: 0,
      consecutiveFailures: 0,
      lastCheckAt: null,
      lastStatus: null,
      lastError: null,
      rate: 'interval',
    });
    c.removeEndpoint(A);
    expect(c.describe().endpoints.map((e) => e.id)).toEqual([B]);
  });

  it('metrics: draining endpoints by state; a removed endpoint’s series go once its pool has closed', async () => {
    const m = createMetrics({ exemplars: false, version: 't' });
    const c = make({ endpoints: [A, B, C] }, { metrics: m });
    m.recordAttempt('svc', C, 'success', 200, 0.01, undefined);
    c.drainEndpoint(B);
    let text = (await renderMetrics(m, undefined)).body;
    expect(text).toContain('peregrine_upstream_endpoints{upstream="svc",state="draining"} 1');
    expect(text).toContain('peregrine_upstream_endpoints{upstream="svc",state="healthy"} 2');
    expect(text).toContain(`peregrine_upstream_attempts_total{upstream="svc",endpoint="${C}"`);
    c.removeEndpoint(C);
    await vi.waitFor(async () => {
      text = (await renderMetrics(m, undefined)).body;
      expect(text).not.toContain(`endpoint="${C}"`);
    });
    expect(text).toContain('peregrine_upstream_endpoints{upstream="svc",state="healthy"} 1');
  });

  it('a closed cluster takes no changes', async () => {
    const c = make({ endpoints: [A] });
    await c.close();
    expect(c.applyEndpoints([{ url: B }])).toEqual({ added: [], removed: [], updated: [] });
    expect(c.removeEndpoint(A)).toBe(false);
    expect(c.endpoints.map((e) => e.id)).toEqual([A]);
  });

  it('destroy() aborts removed endpoints still finishing their attempts', async () => {
    const c = make({ endpoints: [A, B] });
    const [a] = c.endpoints;
    c.removeEndpoint(A);
    await c.destroy();
    expect(a!.pool.destroyed).toBe(true);
  });

  it('logs one line per change with counts and the first ids', () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) });
    const c = make({ endpoints: [A] }, { logger });
    c.applyEndpoints([{ url: B }, { url: C }]);
    const line = lines.find((l) => l.msg === 'endpoint set changed')!;
    expect(line).toMatchObject({
      upstream: 'svc',
      endpoints: 2,
      added: 2,
      removed: 1,
      addedIds: [B, C],
      removedIds: [A],
    });
  });

  it('sums the changes that follow within 10 s into one line, logged when the interval ends or at close', async () => {
    vi.useFakeTimers();
    const clock = new ManualClock();
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) });
    const c = make({ endpoints: [A] }, { logger, now: clock.now });
    const changes = () => lines.filter((l) => String(l.msg).startsWith('endpoint set changed'));
    c.addEndpoint({ url: B });
    expect(changes()).toHaveLength(1);
    // 100 registrations and deregistrations a few ms apart: no line each.
    for (let i = 0; i < 50; i++) {
      clock.advance(50);
      c.addEndpoint({ url: `http://127.0.0.2:${20_000 + i}` });
      clock.advance(50);
      if (i % 2 === 0) c.removeEndpoint(`http://127.0.0.2:${20_000 + i}`);
    }
    expect(changes()).toHaveLength(1);
    clock.advance(SET_LOG_INTERVAL_MS);
    vi.advanceTimersByTime(SET_LOG_INTERVAL_MS);
    expect(changes()).toHaveLength(2);
    expect(changes()[1]).toMatchObject({
      msg: 'endpoint set changed (75 changes)',
      endpoints: 27,
      changes: 75,
      added: 50,
      removed: 25,
      addedIds: Array.from({ length: 10 }, (_, i) => `http://127.0.0.2:${20_000 + i}`),
    });
    // The next change after a quiet interval is logged at once again; one pending at close is flushed.
    clock.advance(SET_LOG_INTERVAL_MS);
    c.removeEndpoint(B);
    expect(changes()).toHaveLength(3);
    c.removeEndpoint(A);
    expect(changes()).toHaveLength(3);
    await c.close();
    expect(changes()).toHaveLength(4);
    expect(changes()[3]).toMatchObject({ changes: 1, removed: 1, removedIds: [A] });
  });
});
