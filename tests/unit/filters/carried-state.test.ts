/**
 * The one rule by which state survives a reload: taken over by key and fingerprint, built anew
 * otherwise, closed when the last set holding it is closed, in whichever order sets close.
 */
import { describe, expect, it } from 'vitest';
import { CarriedState } from '../../../src/dataplane/filters/carried-state.ts';

class Thing {
  closed = 0;
  readonly label: string;
  constructor(label: string) {
    this.label = label;
  }
  close(): void {
    this.closed++;
  }
}

describe('CarriedState', () => {
  it('takes an entry over when key and fingerprint are unchanged, builds one otherwise', () => {
    const v1 = new CarriedState<Thing>();
    const a1 = v1.take('a', 'fa', () => new Thing('a1'));
    const b1 = v1.take('b', 'fb', () => new Thing('b1'));
    v1.seal();
    const v2 = new CarriedState(v1);
    expect(v2.take('a', 'fa', () => new Thing('a2'))).toBe(a1);
    const b2 = v2.take('b', 'fb-changed', () => new Thing('b2'));
    expect(b2).not.toBe(b1);
    v2.seal();
    expect(v2.keys()).toEqual(['a', 'b']);
    // The swap: the old set is released; what the new one took over stays open.
    v1.close();
    v1.close();
    expect(a1.closed).toBe(0);
    expect(b1.closed).toBe(1);
    v2.close();
    expect(a1.closed).toBe(1);
    expect(b2.closed).toBe(1);
  });

  it('a discarded new set closes only what it built; the serving set keeps its entries', () => {
    const serving = new CarriedState<Thing>();
    const a = serving.take('a', 'f', () => new Thing('a'));
    serving.seal();
    const discarded = new CarriedState(serving);
    expect(discarded.take('a', 'f', () => new Thing('never'))).toBe(a);
    const fresh = discarded.take('c', 'f', () => new Thing('c'));
    discarded.close();
    expect(a.closed).toBe(0);
    expect(fresh.closed).toBe(1);
    // And the next compile still takes `a` over.
    const next = new CarriedState(serving);
    expect(next.take('a', 'f', () => new Thing('again'))).toBe(a);
  });

  it('one key taken twice in a set is one entry; with another fingerprint it is a bug', () => {
    const set = new CarriedState<Thing>();
    const a = set.take('a', 'f', () => new Thing('a'));
    expect(set.take('a', 'f', () => new Thing('other'))).toBe(a);
    expect(() => set.take('a', 'g', () => new Thing('g'))).toThrow(/two configurations/);
    set.close();
    expect(a.closed).toBe(1);
  });

  it('never takes over from a set already closed, and forgets its predecessor once sealed', () => {
    const v1 = new CarriedState<Thing>();
    const a1 = v1.take('a', 'f', () => new Thing('a1'));
    v1.close();
    const v2 = new CarriedState(v1);
    expect(v2.take('a', 'f', () => new Thing('a2'))).not.toBe(a1);
    const v3 = new CarriedState(v2);
    v3.seal();
    // Sealed before taking: nothing is carried any more.
    expect(v3.take('a', 'f', () => new Thing('a3')).label).toBe('a3');
  });
});
