import { describe, expect, it } from 'vitest';
import { RateLimiter } from '../../../src/registry/rate-limit.ts';

describe('RateLimiter', () => {
  it('allows a burst, then the sustained rate, per principal; says how long to wait', () => {
    let now = 0;
    const r = new RateLimiter(10, 3, () => now);
    expect([r.take('a'), r.take('a'), r.take('a')]).toEqual([0, 0, 0]);
    expect(r.take('a')).toBe(100);
    expect(r.take('b')).toBe(0);
    now += 100;
    expect(r.take('a')).toBe(0);
    expect(r.take('a')).toBeGreaterThan(0);
    now += 10_000;
    expect([r.take('a'), r.take('a'), r.take('a'), r.take('a')].filter((w) => w === 0).length).toBe(3);
  });

  it('forgets principals whose bucket has refilled', () => {
    let now = 0;
    const r = new RateLimiter(10, 2, () => now);
    for (let i = 0; i < 100; i++) r.take(`p-${i}`);
    expect(r.size).toBe(100);
    now += 1000;
    r.take('x');
    expect(r.size).toBe(1);
  });
});
