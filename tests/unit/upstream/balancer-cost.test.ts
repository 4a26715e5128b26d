/**
 * What a pick costs does not grow with the set: counted, not timed. The endpoints, the array a
 * balancer is given and the request's tried list are proxies that count every read, so a pick that
 * scans the set shows as thousands of reads at 8,192 endpoints where it reads a handful at 16. A
 * scan over a balancer's own typed arrays (weights, scores) would not show: the weighted round
 * robin's schedule is a heap, and its sift steps are counted directly. An update reads each
 * endpoint a few times, not once per other endpoint.
 */
import { describe, expect, it } from 'vitest';
import type { Balancer, PickContext } from '../../../src/dataplane/upstream/balancer.ts';
import { createBalancer } from '../../../src/dataplane/upstream/balancers.ts';
import type { Endpoint } from '../../../src/dataplane/upstream/endpoint.ts';
import { BalancerSchema } from '../../../src/dataplane/upstream/policy-schema.ts';
import { siftDown, siftUp } from '../../../src/dataplane/upstream/weighted-round-robin.ts';
import { BALANCER_KINDS, seededRandom } from './helpers.ts';

interface Counter {
  reads: number;
}

function isIndex(key: string | symbol): boolean {
  return typeof key === 'string' && key.length > 0 && key.charCodeAt(0) <= 57 && /^\d+$/.test(key);
}

/** `n` endpoint stand-ins (what balancers read) in an array; every read of either is counted. */
function countedSet(n: number, counter: Counter, weights?: (i: number) => number): Endpoint[] {
  const endpointReads: ProxyHandler<object> = {
    get(target, key) {
      counter.reads++;
      return Reflect.get(target, key);
    },
  };
  const list = Array.from(
    { length: n },
    (_, i) =>
      new Proxy(
        {
          id: `http://10.1.${i >> 8}.${i & 255}:80`,
          weight: weights?.(i) ?? 1,
          inFlight: i % 3,
          rttMs: 20 + (i % 7),
          rttAt: 0,
        },
        endpointReads,
      ) as unknown as Endpoint,
  );
  return new Proxy(list, {
    get(target, key, receiver) {
      if (isIndex(key)) counter.reads++;
      return Reflect.get(target, key, receiver);
    },
  });
}

function make(kind: (typeof BALANCER_KINDS)[number], list: readonly Endpoint[]): Balancer {
  return createBalancer(BalancerSchema.parse(kind), list, { now: () => 1000, random: seededRandom(7) });
}

/** The most reads one pick made, over `picks` picks. */
function maxReadsPerPick(
  b: Balancer,
  counter: Counter,
  picks: number,
  ctx: (i: number) => PickContext,
): number {
  let most = 0;
  for (let i = 0; i < picks; i++) {
    const c = ctx(i);
    const before = counter.reads;
    b.pick(c);
    most = Math.max(most, counter.reads - before);
  }
  return most;
}

const SMALL = 16;
const LARGE = 8192;

describe.each(BALANCER_KINDS)('pick cost under $kind', (kind) => {
  it.each([
    ['equal weights', undefined],
    ['unequal weights', (i: number) => 1 + (i % 5)],
  ])('does not grow with the set: %s, first attempts and retries', (_what, weights) => {
    const most: Record<string, number[]> = { first: [], retry: [] };
    for (const n of [SMALL, LARGE]) {
      const counter = { reads: 0 };
      const list = countedSet(n, counter, weights);
      const b = make(kind, list);
      // Counted too: a scan of the set that checks each endpoint against it reads it n times.
      const tried = new Proxy([list[0]!, list[1]!], {
        get(target, key, receiver) {
          if (isIndex(key)) counter.reads++;
          return Reflect.get(target, key, receiver);
        },
      });
      most.first!.push(maxReadsPerPick(b, counter, 2000, (i) => ({ hashKey: `k${i}` })));
      most.retry!.push(maxReadsPerPick(b, counter, 2000, (i) => ({ hashKey: `k${i}`, tried })));
      // No key: consistent hashing draws at random.
      most.first!.push(maxReadsPerPick(b, counter, 2000, () => ({})));
      most.retry!.push(maxReadsPerPick(b, counter, 2000, () => ({ tried })));
    }
    for (const [, [smallKeyed, smallRandom, largeKeyed, largeRandom]] of Object.entries(most)) {
      expect(largeKeyed).toBeLessThanOrEqual(Math.max(smallKeyed!, 40));
      expect(largeRandom).toBeLessThanOrEqual(Math.max(smallRandom!, 40));
    }
  });
});

describe('weighted round robin: the schedule is a heap', () => {
  function countedKeys(n: number, counter: Counter): Float64Array {
    const keys = new Float64Array(n);
    for (let i = 0; i < n; i++) keys[i] = (i * 7919) % n;
    return new Proxy(keys, {
      get(target, key) {
        if (isIndex(key)) counter.reads++;
        const v = Reflect.get(target, key);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
  }

  it.each([16, 1024, 65_536])('a sift reads O(log n) keys (n = %i)', (n) => {
    const counter = { reads: 0 };
    const d = countedKeys(n, counter);
    const heap = Int32Array.from({ length: n }, (_, i) => i);
    for (let i = (n >> 1) - 1; i >= 0; i--) siftDown(heap, n, d, i);
    // Two comparisons a level, each reading at most four keys (ties compare twice).
    const bound = 8 * Math.ceil(Math.log2(n)) + 8;
    for (let k = 0; k < 200; k++) {
      // Serve the top: its key moves later, then it sinks.
      const before = counter.reads;
      d[heap[0]!] = n + k;
      siftDown(heap, n, d, 0);
      expect(counter.reads - before).toBeLessThanOrEqual(bound);
      // A key moved earlier rises.
      const pos = (k * 31) % n;
      const up = counter.reads;
      d[heap[pos]!] = -k - 1;
      siftUp(heap, d, pos);
      expect(counter.reads - up).toBeLessThanOrEqual(bound);
      expect(d[heap[0]!]).toBe(-k - 1);
    }
  });

  it('update() reads each endpoint a few times, not once per other endpoint', () => {
    const counter = { reads: 0 };
    const n = 4000;
    const weights = (i: number) => 1 + (i % 4);
    const list = countedSet(n, counter, weights);
    const b = make({ kind: 'round_robin' }, list);
    for (let i = 0; i < 100; i++) b.pick();
    // Half leave, half join: the rotation carries over for the half that stays.
    const next = countedSet(n, counter, weights);
    const mixed = new Proxy([...list.slice(0, n / 2), ...next.slice(0, n / 2)], {});
    const before = counter.reads;
    b.update(mixed);
    expect(counter.reads - before).toBeLessThanOrEqual(12 * n);
  });
});
