import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MemoryRegistryStore } from '../../../src/registry/memory-store.ts';
import { registration as registrationOf } from '../../conformance/registry-store.ts';
import { silentLogger, TEST_LIMITS, testMetrics } from '../../helpers/registry.ts';

const SWEEP_MS = 250;

const registration = (id: string, ttlMs: number) => registrationOf('payments', id, ttlMs);

describe('memory store sweeps', () => {
  let store: MemoryRegistryStore;

  beforeEach(() => {
    // The store's clock is Date.now, faked with the timers.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    store = new MemoryRegistryStore({
      limits: TEST_LIMITS,
      sweepInterval: SWEEP_MS,
      metrics: testMetrics().registryMetrics,
      logger: silentLogger,
    });
  });

  afterEach(async () => {
    await store.close();
    vi.useRealTimers();
  });

  it('arm nothing while no lease is held', () => {
    expect(store.nextSweepAt).toBeUndefined();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('run when the earliest lease can have ended, not every sweepInterval, while renewals keep leases', async () => {
    const sweep = vi.spyOn(store, 'sweep');
    const t0 = Date.now();
    await store.register(registration('a', 15_000), 'gw');
    expect(store.nextSweepAt).toBe(t0 + 15_000);
    // Renewed every 5 s, as a client does: no sweep in the 10 s before the first possible expiry
    // (a sweep every 250 ms would have scanned 40 times).
    for (let i = 0; i < 2; i++) {
      await vi.advanceTimersByTimeAsync(5000);
      expect(await store.renew('payments', 'a', 'gw')).toBeDefined();
    }
    expect(sweep).not.toHaveBeenCalled();
    // At 15 s the lease, renewed at 10 s, still holds: one sweep finds it and arms for its new end.
    await vi.advanceTimersByTimeAsync(5000);
    expect(sweep).toHaveBeenCalledTimes(1);
    expect(store.get('payments', 'a')).toBeDefined();
    expect(store.nextSweepAt).toBe(t0 + 25_000);
    // Silence: removed when its lease ends, without waiting on anything.
    await vi.advanceTimersByTimeAsync(10_000);
    expect(sweep).toHaveBeenCalledTimes(2);
    expect(store.get('payments', 'a')).toBeUndefined();
    expect(store.nextSweepAt).toBeUndefined();
  });

  it('come sooner for a registration whose lease ends before the armed sweep', async () => {
    const t0 = Date.now();
    await store.register(registration('long', 15_000), 'gw');
    await store.register(registration('short', 1000), 'gw');
    expect(store.nextSweepAt).toBe(t0 + 1000);
    await vi.advanceTimersByTimeAsync(1000);
    expect(store.get('payments', 'short')).toBeUndefined();
    expect(store.get('payments', 'long')).toBeDefined();
    expect(store.nextSweepAt).toBe(t0 + 15_000);
  });

  it('run at most once per sweepInterval when leases end one after another', async () => {
    const sweep = vi.spyOn(store, 'sweep');
    const t0 = Date.now();
    // 100 leases ending 10 ms apart over one second.
    for (let i = 0; i < 100; i++) await store.register(registration(`i-${i}`, 1000 + i * 10), 'gw');
    // Sweeps at 1000, 1250, 1500 and 1750 ms: each lease removed within sweepInterval of its end.
    await vi.advanceTimersByTimeAsync(1990);
    expect(sweep).toHaveBeenCalledTimes(4);
    expect(store.list('payments').map((i) => i.id)).toEqual(
      Array.from({ length: 24 }, (_, k) => `i-${76 + k}`).sort(),
    );
    await vi.advanceTimersByTimeAsync(10);
    expect(Date.now() - t0).toBe(2000);
    expect(sweep).toHaveBeenCalledTimes(5);
    expect(store.list('payments')).toHaveLength(0);
  });
});
