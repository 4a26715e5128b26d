import { afterEach, describe, expect, it, vi } from 'vitest';
import { RecentDecisions } from '../../../src/telemetry/recent-decisions.ts';

afterEach(() => {
  vi.useRealTimers();
});

function record(ring: RecentDecisions, n: number): void {
  ring.record(
    'edge',
    n % 2 ? `r${n}` : undefined,
    n % 2 ? 'up' : undefined,
    500 + n,
    `CODE_${n}`,
    `t${n}`,
    n % 3 === 0,
    `q${n}`,
  );
}

describe('RecentDecisions', () => {
  it('keeps the last `capacity` decisions, newest first, with every field', () => {
    vi.useFakeTimers({ now: Date.parse('2030-01-02T03:04:05.000Z') });
    const ring = new RecentDecisions(3);
    expect(ring.recent()).toEqual([]);
    for (let n = 1; n <= 5; n++) record(ring, n);
    expect(ring.total).toBe(5);
    expect(ring.recent().map((d) => d.code)).toEqual(['CODE_5', 'CODE_4', 'CODE_3']);
    expect(ring.recent()[0]).toEqual({
      at: '2030-01-02T03:04:05.000Z',
      status: 505,
      code: 'CODE_5',
      route: 'r5',
      upstream: 'up',
      listener: 'edge',
      traceId: 't5',
      sampled: false,
      requestId: 'q5',
    });
    expect(ring.recent()[1]).toMatchObject({ route: null, upstream: null });
    expect(ring.recent()[2]!.sampled).toBe(true);
    expect(ring.recent(2).map((d) => d.code)).toEqual(['CODE_5', 'CODE_4']);
    expect(ring.recent(0)).toEqual([]);
  });

  it('before it is full, shows what it has', () => {
    const ring = new RecentDecisions(10);
    record(ring, 1);
    record(ring, 2);
    expect(ring.recent().map((d) => d.traceId)).toEqual(['t2', 't1']);
  });

  it('with capacity 0 keeps nothing (and counts nothing)', () => {
    const ring = new RecentDecisions(0);
    record(ring, 1);
    expect(ring.recent()).toEqual([]);
    expect(ring.total).toBe(0);
  });

  it('refuses a capacity that is not a count', () => {
    expect(() => new RecentDecisions(-1)).toThrow(RangeError);
    expect(() => new RecentDecisions(1.5)).toThrow(RangeError);
  });
});
