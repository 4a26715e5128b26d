/**
 * Balancers: the cost of one pick(), the cost of the whole per-request resilience path of a
 * Cluster, and a simulated-latency comparison that chose the default balancer
 * (docs/resilience.md). Not a test; run with `node bench/micro/balancers.ts` (Node 24).
 *
 * The simulation is a discrete-event model, not a load test: N endpoints, each a server with a
 * fixed number of workers and a FIFO queue, service times drawn from an exponential
 * distribution per endpoint, Poisson arrivals at 70% of the total capacity. Each balancer sees
 * what it sees in the gateway: attempts in flight per endpoint (queued or served) and the latency
 * of completed requests. Virtual time; every balancer gets the same arrivals and service draws.
 */

import { UpstreamSchema } from '../../src/config/schema.ts';
import type { Balancer, PickContext } from '../../src/dataplane/upstream/balancer.ts';
import { createBalancer } from '../../src/dataplane/upstream/balancers.ts';
import { Bulkhead } from '../../src/dataplane/upstream/bulkhead.ts';
import { CircuitBreaker } from '../../src/dataplane/upstream/circuit-breaker.ts';
import { Cluster } from '../../src/dataplane/upstream/cluster.ts';
import { Endpoint } from '../../src/dataplane/upstream/endpoint.ts';
import { initRtt, observeRtt } from '../../src/dataplane/upstream/peak-ewma.ts';
import { type BalancerConfig, BalancerSchema } from '../../src/dataplane/upstream/policy-schema.ts';
import { RetryBudget } from '../../src/dataplane/upstream/retry-budget.ts';
import { bench, header } from './harness.ts';

const KINDS: readonly BalancerConfig[] = [
  BalancerSchema.parse({ kind: 'round_robin' }),
  BalancerSchema.parse({ kind: 'least_request' }),
  BalancerSchema.parse({ kind: 'peak_ewma' }),
  BalancerSchema.parse({ kind: 'consistent_hash', hashOn: { source: 'header', name: 'x-user' } }),
];

const BASE = UpstreamSchema.parse({ endpoints: ['http://127.0.0.1:1'] });
const opened: Endpoint[] = [];

function endpoints(n: number): Endpoint[] {
  const list = Array.from(
    { length: n },
    (_, i) => new Endpoint(`http://127.0.0.${(i % 250) + 1}:${20000 + i}`, BASE),
  );
  opened.push(...list);
  return list;
}

/** Deterministic uniform [0, 1) (mulberry32). */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------------------------
// 1. pick() cost

const KEYS = Array.from({ length: 1024 }, (_, i) => `user-${i}`);
const CONTEXTS: PickContext[] = KEYS.map((k) => ({ headers: { 'x-user': k } }));
let sink: unknown;

for (const n of [3, 10, 100]) {
  header(`pick() with ${n} endpoints`);
  const list = endpoints(n);
  for (const cfg of KINDS) {
    const b = createBalancer(cfg, list, { now: performance.now.bind(performance), random: Math.random });
    bench(`${cfg.kind}`, (i) => {
      sink = b.pick(CONTEXTS[i & 1023]);
    });
  }
  for (const cfg of KINDS) {
    const b = createBalancer(cfg, list, { now: performance.now.bind(performance), random: Math.random });
    const tried = [list[0]!];
    const ctx: PickContext[] = KEYS.map((k) => ({ headers: { 'x-user': k }, tried }));
    bench(`${cfg.kind}, retry (one endpoint excluded)`, (i) => {
      sink = b.pick(ctx[i & 1023]);
    });
  }
}

header('the per-request resilience path of a Cluster (defaults; no bulkhead, no health checks)');
{
  const urls = Array.from({ length: 10 }, (_, i) => `http://127.0.0.1:${30000 + i}`);
  for (const cfg of KINDS) {
    const balancer =
      cfg.kind === 'consistent_hash' ? { kind: cfg.kind, hashOn: cfg.hashOn } : { kind: cfg.kind };
    const c = new Cluster(`bench-${cfg.kind}`, UpstreamSchema.parse({ endpoints: urls, balancer }));
    const req = { breakerTicket: -1 };
    bench(`${cfg.kind}: admit, requestStarted, pick, attemptStarted/Finished, release`, (i) => {
      c.admit(req);
      c.requestStarted();
      const e = c.pick(CONTEXTS[i & 1023])!;
      c.attemptStarted(e);
      c.attemptFinished(e, 'success', 200, 5, req);
      c.release(req);
    });
    void c.close();
  }
}

header('policy pieces, each alone (compare: cockatiel execute() is 150-500 ns, docs/decisions.md)');
{
  const cfg = UpstreamSchema.parse({ endpoints: ['http://127.0.0.1:1'], bulkhead: { maxConcurrent: 1000 } });
  const now = performance.now.bind(performance);
  const breaker = new CircuitBreaker(cfg.circuitBreaker, {
    now,
    probeTimeoutMs: 30_000,
    onTransition: () => {},
  });
  bench('CircuitBreaker: allow() + onSuccess(now)', () => {
    breaker.onSuccess(now(), breaker.allow());
  });
  const bulkhead = new Bulkhead(cfg.bulkhead, 'bench');
  bench('Bulkhead: tryAcquire() + release()', () => {
    bulkhead.tryAcquire();
    bulkhead.release();
  });
  const budget = new RetryBudget(cfg.retries.budget, now);
  bench('RetryBudget: requestStarted()', () => {
    budget.requestStarted();
  });
}

// ---------------------------------------------------------------------------------------------
// 2. Simulated latency

interface Scenario {
  readonly name: string;
  readonly endpoints: number;
  readonly workers: number;
  /** Mean service time of endpoint i at virtual time t for a request drawn as r (uniform), ms. */
  mean(i: number, t: number, r: number): number;
  /** Long-run mean service time of endpoint i (sets the offered load). */
  average(i: number): number;
}

const SCENARIOS: readonly Scenario[] = [
  {
    name: 'homogeneous: 10 endpoints, 10 ms each',
    endpoints: 10,
    workers: 8,
    mean: () => 10,
    average: () => 10,
  },
  {
    name: 'one slow: endpoint 0 at 50 ms, others 10 ms',
    endpoints: 10,
    workers: 8,
    mean: (i) => (i === 0 ? 50 : 10),
    average: (i) => (i === 0 ? 50 : 10),
  },
  {
    name: 'one 2x slower: endpoint 0 at 20 ms, others 10 ms',
    endpoints: 10,
    workers: 8,
    mean: (i) => (i === 0 ? 20 : 10),
    average: (i) => (i === 0 ? 20 : 10),
  },
  {
    name: 'heterogeneous: 5 to 32 ms',
    endpoints: 10,
    workers: 8,
    mean: (i) => 5 + i * 3,
    average: (i) => 5 + i * 3,
  },
  {
    name: 'intermittent: endpoint 0 at 100 ms every other 2 s, else 10 ms',
    endpoints: 10,
    workers: 8,
    mean: (i, t) => (i === 0 && Math.floor(t / 2000) % 2 === 1 ? 100 : 10),
    average: (i) => (i === 0 ? 55 : 10),
  },
  {
    name: 'bimodal requests: 90% at 2 ms, 10% at 100 ms, equal endpoints',
    endpoints: 10,
    workers: 8,
    mean: (_i, _t, r) => (r < 0.1 ? 100 : 2),
    average: () => 11.8,
  },
];

const REQUESTS = 200_000;
const WARMUP = 20_000;
const LOAD = 0.7;

interface Event {
  t: number;
  kind: 0 | 1; // 0 arrival, 1 completion
  endpoint: number;
  startedAt: number;
}

/** A binary min-heap on `t`. */
class Heap {
  readonly items: Event[] = [];
  push(e: Event): void {
    const a = this.items;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]!.t <= a[i]!.t) break;
      [a[p], a[i]] = [a[i]!, a[p]!];
      i = p;
    }
  }
  pop(): Event | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last !== undefined) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && a[l]!.t < a[m]!.t) m = l;
        if (r < a.length && a[r]!.t < a[m]!.t) m = r;
        if (m === i) break;
        [a[m], a[i]] = [a[i]!, a[m]!];
        i = m;
      }
    }
    return top;
  }
}

function simulate(
  s: Scenario,
  cfg: BalancerConfig,
): { mean: number; p50: number; p99: number; p999: number } {
  const list = endpoints(s.endpoints);
  let now = 0;
  const clock = () => now;
  for (const e of list) initRtt(e, 30, 0);
  const balancer: Balancer = createBalancer(cfg, list, { now: clock, random: seeded(7) });
  const arrivals = seeded(11);
  const service = seeded(13);
  const keys = seeded(17);
  const kinds = seeded(19);
  const capacity = Array.from({ length: s.endpoints }, (_, i) => s.workers / s.average(i)).reduce(
    (a, b) => a + b,
  );
  const rate = capacity * LOAD; // requests per ms
  const busy = new Array<number>(s.endpoints).fill(0);
  /** Per endpoint: queued [arrival time, request draw] pairs, flattened. */
  const queues: number[][] = Array.from({ length: s.endpoints }, () => []);
  const heap = new Heap();
  const latencies: number[] = [];
  heap.push({ t: 0, kind: 0, endpoint: -1, startedAt: 0 });
  let arrived = 0;
  const ctx = { hashKey: '' };
  const start = (i: number, startedAt: number, r: number) => {
    busy[i]!++;
    const dt = -Math.log(1 - service()) * s.mean(i, now, r);
    heap.push({ t: now + dt, kind: 1, endpoint: i, startedAt });
  };
  for (let ev = heap.pop(); ev !== undefined; ev = heap.pop()) {
    now = ev.t;
    if (ev.kind === 0) {
      arrived++;
      if (arrived < REQUESTS)
        heap.push({ t: now - Math.log(1 - arrivals()) / rate, kind: 0, endpoint: -1, startedAt: 0 });
      ctx.hashKey = `k${Math.floor(keys() * 1e9)}`;
      const e = balancer.pick(ctx)!;
      const i = list.indexOf(e);
      e.inFlight++;
      const r = kinds();
      if (busy[i]! < s.workers) start(i, now, r);
      else queues[i]!.push(now, r);
    } else {
      const i = ev.endpoint;
      const e = list[i]!;
      e.inFlight--;
      busy[i]!--;
      const latency = now - ev.startedAt;
      observeRtt(e, latency, false, now, 10_000);
      latencies.push(latency);
      const q = queues[i]!;
      if (q.length > 0) {
        const at = q.shift()!;
        start(i, at, q.shift()!);
      }
    }
  }
  const measured = latencies.slice(WARMUP).sort((a, b) => a - b);
  const q = (p: number) => measured[Math.min(measured.length - 1, Math.floor(p * measured.length))]!;
  const mean = measured.reduce((a, b) => a + b, 0) / measured.length;
  return { mean, p50: q(0.5), p99: q(0.99), p999: q(0.999) };
}

for (const s of SCENARIOS) {
  header(`simulated latency (ms), ${s.name}, load ${LOAD * 100}%`);
  console.log(
    `${'balancer'.padEnd(18)} ${'mean'.padStart(8)} ${'p50'.padStart(8)} ${'p99'.padStart(8)} ${'p99.9'.padStart(8)}`,
  );
  for (const cfg of KINDS) {
    const r = simulate(s, cfg);
    console.log(
      `${cfg.kind.padEnd(18)} ${r.mean.toFixed(1).padStart(8)} ${r.p50.toFixed(1).padStart(8)} ${r.p99.toFixed(1).padStart(8)} ${r.p999.toFixed(1).padStart(8)}`,
    );
  }
}

void sink;
await Promise.all(opened.map((e) => e.close()));
