/**
 * The shared deadline of a Redis policy's store calls, on a fake clock: an unsettled call expires
 * at its own deadline and not before, calls settled in time never do, however many calls are in
 * flight there is one timer, and settled calls are let go at once.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { type Deadlined, DeadlineQueue } from '../../../../src/dataplane/filters/rate-limit/deadlines.ts';

const WAIT_MS = 50;

class Call implements Deadlined {
  readonly deadline: number;
  settled = false;
  expiredAt: number | undefined;
  constructor() {
    this.deadline = performance.now() + WAIT_MS;
  }
  expire(): void {
    this.settled = true;
    this.expiredAt = performance.now();
  }
}

let queue: DeadlineQueue<Call>;

function call(): Call {
  const c = new Call();
  queue.add(c, WAIT_MS);
  return c;
}

function settle(c: Call): void {
  c.settled = true;
  queue.release();
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
  queue = new DeadlineQueue<Call>();
});
afterEach(() => {
  queue.close();
  vi.useRealTimers();
});

describe('DeadlineQueue', () => {
  it('expires an unsettled call at its deadline, not a millisecond before', () => {
    const start = performance.now();
    const c = call();
    vi.advanceTimersByTime(WAIT_MS - 1);
    expect(c.expiredAt).toBeUndefined();
    vi.advanceTimersByTime(1);
    expect(c.expiredAt).toBe(start + WAIT_MS);
  });

  it('never expires a call settled in time', () => {
    const c = call();
    vi.advanceTimersByTime(WAIT_MS - 1);
    settle(c);
    vi.advanceTimersByTime(10 * WAIT_MS);
    expect(c.expiredAt).toBeUndefined();
  });

  it('watches a thousand calls in flight with one timer, and expires each at its own deadline', () => {
    const calls: Call[] = [];
    for (let i = 0; i < 1000; i++) {
      calls.push(call());
      vi.advanceTimersByTime(0.01);
    }
    expect(vi.getTimerCount()).toBe(1);
    // The first 500 answer; the others do not.
    for (const c of calls.slice(0, 500)) settle(c);
    vi.advanceTimersByTime(WAIT_MS + 100);
    expect(calls.slice(0, 500).every((c) => c.expiredAt === undefined)).toBe(true);
    for (const c of calls.slice(500)) {
      expect(c.expiredAt).toBeDefined();
      // Whole-millisecond timers: at most 1 ms late.
      expect(c.expiredAt! - c.deadline).toBeGreaterThanOrEqual(0);
      expect(c.expiredAt! - c.deadline).toBeLessThanOrEqual(1);
    }
    expect(vi.getTimerCount()).toBe(0);
    expect(queue.size).toBe(0);
  });

  it('lets settled calls at the front go at once, and a later one still expires after an earlier settled', () => {
    const a = call();
    vi.advanceTimersByTime(20);
    const b = call();
    settle(a);
    expect(queue.size).toBe(1);
    // The timer armed for a's deadline finds it settled and waits on for b's.
    vi.advanceTimersByTime(WAIT_MS - 1);
    expect(b.expiredAt).toBeUndefined();
    vi.advanceTimersByTime(1);
    expect(b.expiredAt).toBe(b.deadline);
    settle(b);
    expect(queue.size).toBe(0);
  });

  it('expires nothing after close()', () => {
    const c = call();
    queue.close();
    queue.close();
    vi.advanceTimersByTime(10 * WAIT_MS);
    expect(c.expiredAt).toBeUndefined();
    expect(vi.getTimerCount()).toBe(0);
  });
});
