/**
 * Memory counters at window edges, on a fake clock: exactly N per window, the window opened by a
 * key's first request and ending exactly `duration` later, fewer than 2N across one boundary (the
 * fixed-window edge), what a second, shorter limit does to that edge, cost, burst and block. And
 * the insurance of a Redis policy holds at most `maxKeys` keys, as the memory store does.
 */
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MemoryCounters, RedisCounters } from '../../../../src/dataplane/filters/rate-limit/counters.ts';
import { RateLimitSchema } from '../../../../src/dataplane/filters/rate-limit/schema.ts';
import { RedisConnection } from '../../../../src/stores/redis.ts';
import { RedisSchema } from '../../../../src/stores/schema.ts';
import { createMetrics } from '../../../../src/telemetry/metrics.ts';
import { freePort } from '../../../helpers/ports.ts';

function counters(settings: Record<string, unknown>): MemoryCounters {
  const cfg = RateLimitSchema.parse(settings);
  return new MemoryCounters(cfg.limits, { maxKeys: cfg.maxKeys, evicted: { value: 0 } });
}

/** Send `n` requests for `key` now; how many were admitted (every limit under). */
function admitted(c: MemoryCounters, n: number, key = 'k', cost = 1): number {
  let ok = 0;
  for (let i = 0; i < n; i++) {
    const { results } = c.count(key, cost);
    if (results.every((r) => r !== undefined && !r.over)) ok++;
  }
  return ok;
}

beforeEach(() => {
  vi.useFakeTimers({ now: 1_750_000_000_000 });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('one limit', () => {
  it('admits exactly N in a window and the first request after it ends, not one millisecond before', () => {
    const c = counters({ limits: [{ points: 5, duration: '10s' }] });
    expect(admitted(c, 8)).toBe(5);
    vi.advanceTimersByTime(9_999);
    expect(admitted(c, 1)).toBe(0);
    vi.advanceTimersByTime(1);
    expect(admitted(c, 8)).toBe(5);
  });

  it('reports what it counted: remaining points and the time to the window end', () => {
    const c = counters({ limits: [{ points: 3, duration: '10s' }] });
    const seen: [number, number, boolean][] = [];
    for (let i = 0; i < 4; i++) {
      const r = c.count('k', 1).results[0]!;
      seen.push([r.res.remainingPoints, r.res.msBeforeNext, r.over]);
      vi.advanceTimersByTime(1_000);
    }
    expect(seen).toEqual([
      [2, 10_000, false],
      [1, 9_000, false],
      [0, 8_000, false],
      [0, 7_000, true],
    ]);
  });

  it('admits 2N-1 within 1 ms across a window boundary (the fixed-window edge)', () => {
    const c = counters({ limits: [{ points: 10, duration: '10s' }] });
    // The first request opens the window at t=0; the other nine come at its very end.
    expect(admitted(c, 1)).toBe(1);
    vi.advanceTimersByTime(9_999);
    const before = admitted(c, 20);
    vi.advanceTimersByTime(1);
    const after = admitted(c, 20);
    expect([before, after]).toEqual([9, 10]);
  });

  it('keeps keys apart: each key has its own window, opened by its own first request', () => {
    const c = counters({ limits: [{ points: 2, duration: '10s' }] });
    expect(admitted(c, 3, 'a')).toBe(2);
    vi.advanceTimersByTime(5_000);
    expect(admitted(c, 3, 'b')).toBe(2);
    vi.advanceTimersByTime(5_000);
    expect(admitted(c, 3, 'a')).toBe(2);
    expect(admitted(c, 1, 'b')).toBe(0);
  });

  it('counts a request at its cost; one that does not fit is refused whole', () => {
    const c = counters({ limits: [{ points: 10, duration: '10s' }] });
    expect(admitted(c, 3, 'k', 3)).toBe(3);
    expect(admitted(c, 1, 'k', 3)).toBe(0);
  });
});

describe('a second, shorter limit at the edge', () => {
  it('bounds what crosses the boundary at once by the short limit', () => {
    // 10 per 10 s, and at most 2 per second: across the long window's edge, 2 requests get
    // through in the second around it instead of 9 + 10 within 1 ms.
    const c = counters({
      limits: [
        { points: 10, duration: '10s' },
        { points: 2, duration: '1s' },
      ],
    });
    expect(admitted(c, 1)).toBe(1);
    vi.advanceTimersByTime(9_999);
    const before = admitted(c, 3);
    vi.advanceTimersByTime(1);
    const after = admitted(c, 3);
    vi.advanceTimersByTime(999);
    const nextSecond = admitted(c, 3);
    expect([before, after, nextSecond]).toEqual([2, 0, 2]);
  });

  it('counts a request refused by one limit against the others too', () => {
    const c = counters({
      limits: [
        { points: 5, duration: '10s' },
        { points: 1, duration: '1s' },
      ],
    });
    // Five requests in the first second: one admitted, but the 10 s window is spent.
    expect(admitted(c, 5)).toBe(1);
    vi.advanceTimersByTime(1_000);
    expect(admitted(c, 1)).toBe(0);
    vi.advanceTimersByTime(9_000);
    expect(admitted(c, 1)).toBe(1);
  });
});

describe('burst and block', () => {
  it('admits burst points once the limit is spent, over the burst window', () => {
    const c = counters({ limits: [{ points: 2, duration: '1s', burst: { points: 3, duration: '10s' } }] });
    expect(admitted(c, 10)).toBe(5);
    vi.advanceTimersByTime(1_000);
    // A new second: its 2 points, and the burst is spent until its own window ends.
    expect(admitted(c, 10)).toBe(2);
    vi.advanceTimersByTime(9_000);
    expect(admitted(c, 10)).toBe(5);
  });

  it('keeps a key refused for blockDuration once it went over', () => {
    const c = counters({ limits: [{ points: 2, duration: '1s', blockDuration: '5s' }] });
    expect(admitted(c, 3)).toBe(2);
    const blocked = c.count('k', 1).results[0]!;
    expect(blocked.over).toBe(true);
    expect(blocked.res.msBeforeNext).toBe(5_000);
    vi.advanceTimersByTime(4_999);
    expect(admitted(c, 1)).toBe(0);
    vi.advanceTimersByTime(1);
    expect(admitted(c, 1)).toBe(1);
  });
});

describe('insurance', () => {
  it('holds at most maxKeys keys while Redis is unreachable, as the memory store does', async () => {
    vi.useRealTimers();
    // Nothing listens there: every call fails at once (no offline queue) and the insurance decides.
    const port = await freePort();
    const metrics = createMetrics({ exemplars: false, version: 'test' });
    const shared = new RedisConnection(RedisSchema.parse({ url: `redis://127.0.0.1:${port}` }), {
      logger: pino({ level: 'silent' }),
      metrics: metrics.redis,
    });
    const evicted = { value: 0 };
    const c = new RedisCounters({
      policy: 'p',
      limits: RateLimitSchema.parse({ limits: [{ points: 2, duration: '1m' }] }).limits,
      redis: shared.rateLimits(),
      timeoutMs: 50,
      onError: 'insurance',
      replicas: 1,
      keyBound: { maxKeys: 10, evicted },
      observer: { storeCall() {}, storeFailed() {} },
    });
    try {
      for (let i = 0; i < 50; i++) {
        const consumed = await c.consume(`k${i}`, 1, (x) => x);
        expect(consumed.degraded).toBe('insured');
      }
      expect(c.keys).toBe(10);
      expect(evicted.value).toBe(40);
      // The keys held count on: k49 had 1 of its 2 points, the third request is over.
      expect((await c.consume('k49', 1, (x) => x)).results[0]!.over).toBe(false);
      expect((await c.consume('k49', 1, (x) => x)).results[0]!.over).toBe(true);
    } finally {
      c.close();
      await shared.close();
      metrics.close();
    }
  });
});
