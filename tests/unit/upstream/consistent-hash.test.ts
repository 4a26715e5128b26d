import { afterAll, describe, expect, it } from 'vitest';
import { ConsistentHashBalancer, cookieValue } from '../../../src/dataplane/upstream/consistent-hash.ts';
import type { Endpoint } from '../../../src/dataplane/upstream/endpoint.ts';
import { hash32 } from '../../../src/dataplane/upstream/hash.ts';
import { closeAll, endpoints, seededRandom } from './helpers.ts';

const opened: Endpoint[] = [];
function eps(n: number): Endpoint[] {
  const list = endpoints(n);
  opened.push(...list);
  return list;
}
afterAll(() => closeAll(opened));

const KEYS = Array.from({ length: 20_000 }, (_, i) => `session-${i}`);

function owners(b: ConsistentHashBalancer): Map<string, string> {
  return new Map(KEYS.map((k) => [k, b.owner(k)!.id]));
}

function moved(before: Map<string, string>, after: Map<string, string>): number {
  let n = 0;
  for (const [k, id] of before) if (after.get(k) !== id) n++;
  return n;
}

describe('ConsistentHashBalancer stability', () => {
  const N = 10;
  const list = eps(N + 1);
  const ten = list.slice(0, N);
  const header = { source: 'header', name: 'x-user' } as const;

  it('adding one endpoint to N moves about 1/(N+1) of the keys, all of them to the new endpoint', () => {
    const b = new ConsistentHashBalancer(ten, header, seededRandom());
    const before = owners(b);
    b.update(list);
    const after = owners(b);
    const n = moved(before, after);
    expect(n / KEYS.length).toBeGreaterThan((1 / (N + 1)) * 0.6);
    expect(n / KEYS.length).toBeLessThan((1 / (N + 1)) * 1.4);
    for (const [k, id] of before) if (after.get(k) !== id) expect(after.get(k)).toBe(list[N]!.id);
  });

  it('removing one of N endpoints moves only its keys (about 1/N)', () => {
    const b = new ConsistentHashBalancer(ten, header, seededRandom());
    const before = owners(b);
    const gone = ten[3]!;
    b.update(ten.filter((e) => e !== gone));
    const after = owners(b);
    const n = moved(before, after);
    expect(n / KEYS.length).toBeGreaterThan((1 / N) * 0.6);
    expect(n / KEYS.length).toBeLessThan((1 / N) * 1.4);
    for (const [k, id] of before) {
      if (id !== gone.id) expect(after.get(k)).toBe(id);
      else expect(after.get(k)).not.toBe(gone.id);
    }
    // And back: the same keys return to it.
    b.update(ten);
    expect(moved(before, owners(b))).toBe(0);
  });

  it('builds the same ring whatever the order of the endpoints (every replica agrees)', () => {
    const a = new ConsistentHashBalancer(ten, header, seededRandom());
    const b = new ConsistentHashBalancer([...ten].reverse(), header, seededRandom());
    expect(moved(owners(a), owners(b))).toBe(0);
  });

  it('a retry walks the ring to the next distinct endpoint', () => {
    const b = new ConsistentHashBalancer(ten, header, seededRandom());
    const first = b.owner('k')!;
    const second = b.pick({ hashKey: 'k', tried: [first] })!;
    expect(second).not.toBe(first);
    expect(b.pick({ hashKey: 'k', tried: [first] })).toBe(second);
  });
});

describe('ConsistentHashBalancer keys', () => {
  const list = eps(5);

  it('hashes on a header, case-insensitively by name, and is sticky', () => {
    const b = new ConsistentHashBalancer(list, { source: 'header', name: 'X-User' }, seededRandom());
    const e = b.pick({ headers: { 'x-user': 'alice' } });
    for (let i = 0; i < 20; i++) expect(b.pick({ headers: { 'x-user': 'alice' } })).toBe(e);
    expect(b.pick({ headers: { 'x-user': 'alice' } })).toBe(b.owner('alice'));
  });

  it('hashes on a cookie', () => {
    const b = new ConsistentHashBalancer(list, { source: 'cookie', name: 'sid' }, seededRandom());
    expect(b.pick({ headers: { cookie: 'a=1; sid=abc; b=2' } })).toBe(b.owner('abc'));
    expect(b.pick({ headers: { cookie: 'xsid=zzz; sid=abc' } })).toBe(b.owner('abc'));
  });

  it('hashes on the client address', () => {
    const b = new ConsistentHashBalancer(list, { source: 'client_address' }, seededRandom());
    expect(b.pick({ clientAddress: '10.1.2.3' })).toBe(b.owner('10.1.2.3'));
  });

  it('without a key, spreads at random over the (untried) endpoints', () => {
    const b = new ConsistentHashBalancer(list, { source: 'header', name: 'x-user' }, seededRandom());
    const seen = new Set<Endpoint | undefined>();
    for (let i = 0; i < 200; i++) seen.add(b.pick({ headers: {} }));
    expect(seen.size).toBe(5);
    for (let i = 0; i < 200; i++) expect(b.pick({ tried: [list[0]!] })).not.toBe(list[0]);
  });

  it('cookieValue finds whole cookie names only', () => {
    expect(cookieValue('sid=1', 'sid')).toBe('1');
    expect(cookieValue('a=2;sid=3', 'sid')).toBe('3');
    expect(cookieValue('mysid=1; sid= 4 ', 'sid')).toBe('4');
    expect(cookieValue('sidx=1', 'sid')).toBeUndefined();
    expect(cookieValue('sid=', 'sid')).toBeUndefined();
    expect(cookieValue(undefined, 'sid')).toBeUndefined();
  });

  it('hash32 is stable across versions (ring positions are shared by replicas)', () => {
    expect(hash32('')).toBe(hash32(''));
    expect([hash32('a'), hash32('b'), hash32('session-1')]).toEqual([444641715, 2193908274, 599268235]);
  });
});
