/**
 * One suite, every Balancer implementation: what the cluster relies on whichever kind is
 * configured. Kind-specific behaviour is tested below the suite.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { Balancer, PickContext } from '../../../src/dataplane/upstream/balancer.ts';
import { createBalancer } from '../../../src/dataplane/upstream/balancers.ts';
import type { Endpoint } from '../../../src/dataplane/upstream/endpoint.ts';
import { observeRtt } from '../../../src/dataplane/upstream/peak-ewma.ts';
import { BalancerSchema } from '../../../src/dataplane/upstream/policy-schema.ts';
import { BALANCER_KINDS, closeAll, endpoints, ManualClock, seededRandom, tally } from './helpers.ts';

const KINDS = BALANCER_KINDS;

const opened: Endpoint[] = [];
function eps(n: number, weights?: number[]): Endpoint[] {
  const list = endpoints(n, weights);
  opened.push(...list);
  return list;
}
afterAll(() => closeAll(opened));

/** A fresh key per pick, so consistent hashing spreads like the others; the rest ignore it. */
function keyed(i: number, tried?: readonly Endpoint[]): PickContext {
  return { hashKey: `user-${i}`, tried };
}

describe.each(KINDS)('Balancer conformance: $kind', (cfg) => {
  const clock = new ManualClock();
  function make(list: readonly Endpoint[], seed = 1): Balancer {
    return createBalancer(BalancerSchema.parse(cfg), list, { now: clock.now, random: seededRandom(seed) });
  }

  it('reports its kind', () => {
    expect(make(eps(2)).kind).toBe(cfg.kind);
  });

  it('returns undefined without endpoints and the only endpoint when there is one, tried or not', () => {
    expect(make([]).pick()).toBeUndefined();
    expect(make([]).pick(keyed(1))).toBeUndefined();
    const [only] = eps(1);
    const b = make([only!]);
    expect(b.pick()).toBe(only);
    expect(b.pick(keyed(2, [only!]))).toBe(only);
  });

  it('picks without any context (the WebSocket path calls pick())', () => {
    const list = eps(3);
    const b = make(list);
    for (let i = 0; i < 20; i++) expect(list).toContain(b.pick());
  });

  it('spreads picks evenly over equal endpoints', () => {
    const list = eps(4);
    const b = make(list);
    const counts = tally(8000, (i) => b.pick(keyed(i)));
    expect(counts.size).toBe(4);
    for (const e of list) {
      const n = counts.get(e.id)!;
      expect(n).toBeGreaterThan(2000 * 0.8);
      expect(n).toBeLessThan(2000 * 1.2);
    }
  });

  it('honours weights', () => {
    const list = eps(3, [1, 2, 3]);
    const b = make(list);
    const counts = tally(6000, (i) => b.pick(keyed(i)));
    list.forEach((e, i) => {
      const expected = (1000 * (i + 1)) as number;
      if (cfg.kind === 'round_robin') expect(counts.get(e.id)).toBe(expected);
      else {
        expect(counts.get(e.id)!).toBeGreaterThan(expected * 0.8);
        expect(counts.get(e.id)!).toBeLessThan(expected * 1.2);
      }
    });
  });

  it('only returns endpoints of its current set', () => {
    const [a, b, c] = eps(3);
    const bal = make([a!, b!, c!]);
    bal.update([a!, c!]);
    const counts = tally(2000, (i) => bal.pick(keyed(i)));
    expect(counts.has(b!.id)).toBe(false);
    expect(counts.get(a!.id)).toBeGreaterThan(0);
    expect(counts.get(c!.id)).toBeGreaterThan(0);
    bal.update([]);
    expect(bal.pick(keyed(1))).toBeUndefined();
  });

  it('never returns a tried endpoint while another exists, and one of them when all were tried', () => {
    const [a, b, c] = eps(3);
    const bal = make([a!, b!, c!]);
    for (let i = 0; i < 1000; i++) {
      expect(bal.pick(keyed(i, [a!]))).not.toBe(a);
      expect(bal.pick(keyed(i, [a!, b!]))).toBe(c);
      expect([a, b, c]).toContain(bal.pick(keyed(i, [a!, b!, c!])));
    }
    // Only one untried among many: the sampling gives up and falls back to it.
    const ten = eps(10);
    const wide = make(ten);
    for (let i = 0; i < 200; i++) expect(wide.pick(keyed(i, ten.slice(1)))).toBe(ten[0]);
    // Tried endpoints outside the set do not matter.
    const [d] = eps(1);
    expect(tally(300, (i) => bal.pick(keyed(i, [d!]))).size).toBe(3);
  });

  it('update() with the same endpoints keeps its state: the pick sequence goes on unchanged', () => {
    const list = eps(3, [5, 1, 2]);
    const plain = make(list, 9);
    const updated = make(list, 9);
    const seqPlain: string[] = [];
    const seqUpdated: string[] = [];
    for (let i = 0; i < 50; i++) {
      if (i === 17) updated.update([...list]);
      seqPlain.push(plain.pick(keyed(i))!.id);
      seqUpdated.push(updated.pick(keyed(i))!.id);
    }
    expect(seqUpdated).toEqual(seqPlain);
  });

  it('update() adding an endpoint keeps using the others and starts using the new one', () => {
    const [a, b, c] = eps(3);
    const bal = make([a!, b!]);
    for (let i = 0; i < 10; i++) bal.pick(keyed(i));
    bal.update([a!, b!, c!]);
    const counts = tally(3000, (i) => bal.pick(keyed(i)));
    for (const e of [a!, b!, c!]) expect(counts.get(e.id)).toBeGreaterThan(600);
  });
});

describe('WeightedRoundRobinBalancer', () => {
  it('interleaves by weight (earliest deadline first): 5,1,1 gives a a a b c a a', () => {
    const [a, b, c] = eps(3, [5, 1, 1]);
    const bal = createBalancer({ kind: 'round_robin', panicThreshold: 50 }, [a!, b!, c!], {
      now: () => 0,
      random: Math.random,
    });
    const names = new Map([
      [a, 'a'],
      [b, 'b'],
      [c, 'c'],
    ]);
    const seq = Array.from({ length: 14 }, () => names.get(bal.pick()!)).join('');
    expect(seq).toBe('aaabcaaaaabcaa');
  });

  it.each([
    ['equal weights', [1, 1, 1]],
    ['weights 3,1,2', [3, 1, 2]],
  ])(
    'retries take turns of their own: first attempts rotate as if there were none (%s)',
    (_what, weights) => {
      const list = eps(3, weights);
      const deps = { now: () => 0, random: Math.random };
      const plain = createBalancer({ kind: 'round_robin', panicThreshold: 50 }, list, deps);
      const retried = createBalancer({ kind: 'round_robin', panicThreshold: 50 }, list, deps);
      const firstPlain: string[] = [];
      const firstRetried: string[] = [];
      const retries = new Set<string>();
      for (let i = 0; i < 60; i++) {
        firstPlain.push(plain.pick()!.id);
        const first = retried.pick()!;
        firstRetried.push(first.id);
        // Every first attempt on list[0] fails and is retried elsewhere.
        if (first === list[0]) {
          const retry = retried.pick({ tried: [first] })!;
          expect(retry).not.toBe(list[0]);
          retries.add(retry.id);
        }
      }
      expect(firstRetried).toEqual(firstPlain);
      // The retries themselves still rotate over the other endpoints.
      expect(retries).toEqual(new Set([list[1]!.id, list[2]!.id]));
    },
  );
});

describe('LeastRequestBalancer', () => {
  it('avoids the endpoint with more attempts in flight', () => {
    const list = eps(3);
    const bal = createBalancer({ kind: 'least_request', panicThreshold: 50 }, list, {
      now: () => 0,
      random: seededRandom(3),
    });
    list[0]!.inFlight = 5;
    const counts = tally(1000, () => bal.pick());
    list[0]!.inFlight = 0;
    // P2C: the busy endpoint wins only against itself, which the distinct draw rules out.
    expect(counts.has(list[0]!.id)).toBe(false);
  });
});

describe('PeakEwmaBalancer', () => {
  it('sends less to an endpoint that turned slow, and tries it again as its estimate decays', () => {
    const clock = new ManualClock();
    const list = eps(3);
    for (const e of list) observeRtt(e, 10, false, clock.t, 10_000);
    const bal = createBalancer(
      { kind: 'peak_ewma', panicThreshold: 50, decay: 10_000, defaultRtt: 30 },
      list,
      { now: clock.now, random: seededRandom(5) },
    );
    observeRtt(list[0]!, 500, false, clock.t, 10_000);
    expect(list[0]!.rttMs).toBe(500);
    const slow = tally(1000, () => bal.pick()).get(list[0]!.id) ?? 0;
    expect(slow).toBe(0);
    // Without new observations every estimate decays toward 0 at the same rate: the ordering
    // stays, but a busy fast endpoint now loses to the idle slow one.
    clock.advance(30_000);
    list[1]!.inFlight = 100;
    list[2]!.inFlight = 100;
    const later = tally(1000, () => bal.pick()).get(list[0]!.id) ?? 0;
    list[1]!.inFlight = 0;
    list[2]!.inFlight = 0;
    expect(later).toBeGreaterThan(600);
  });
});

describe('peak-EWMA failure penalty', () => {
  it('makes a failing endpoint look slow, compounding up to 1 s, never below its own latency', () => {
    const [e] = eps(1);
    observeRtt(e!, 5, false, 0, 10_000);
    const seen: number[] = [];
    for (let i = 0; i < 6; i++) {
      observeRtt(e!, 2, true, 0, 10_000);
      seen.push(e!.rttMs);
    }
    expect(seen).toEqual([20, 80, 320, 1000, 1000, 1000]);
    observeRtt(e!, 3000, true, 0, 10_000);
    expect(e!.rttMs).toBe(3000);
  });
});
