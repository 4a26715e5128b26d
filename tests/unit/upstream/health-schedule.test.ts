/**
 * When health checks run, with fake timers and a fake HTTP exchange (what a check asks is tested
 * against real servers in health-checker.test.ts): each endpoint checked once per interval, the
 * checks of many endpoints spread over it, never more than maxChecksInFlight at once, endpoints
 * out of use checked at the idle interval without keeping a connection, and one coming into use
 * checked promptly.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Endpoint } from '../../../src/dataplane/upstream/endpoint.ts';
import {
  HealthChecker,
  type HealthProbes,
  maxChecksInFlight,
} from '../../../src/dataplane/upstream/health-checker.ts';
import { HealthCheckSchema } from '../../../src/dataplane/upstream/policy-schema.ts';
import { seededRandom } from './helpers.ts';

afterEach(() => {
  vi.useRealTimers();
});

/** What the checker reads of an endpoint: its id, host and health. */
function fakeEndpoints(n: number): Endpoint[] {
  return Array.from(
    { length: n },
    (_, i) => ({ id: `http://10.2.0.${i}:80`, host: `10.2.0.${i}:80`, healthy: true }) as Endpoint,
  );
}

interface Recorded {
  endpoint: Endpoint;
  at: number;
  idle: boolean;
}

/** Probes that answer 200 after `latencyMs` (or never, when null: the checker's timeout aborts them). */
function fakeProbes(latencyMs: number | null): HealthProbes & {
  checks: Recorded[];
  inFlight: number;
  maxInFlight: number;
} {
  const p = {
    checks: [] as Recorded[],
    inFlight: 0,
    maxInFlight: 0,
    check(endpoint: Endpoint, idle: boolean, signal: AbortSignal): Promise<number> {
      p.checks.push({ endpoint, at: Date.now(), idle });
      p.inFlight++;
      p.maxInFlight = Math.max(p.maxInFlight, p.inFlight);
      return new Promise<number>((resolve, reject) => {
        const done = () => {
          p.inFlight--;
        };
        const answer = () => {
          done();
          resolve(200);
        };
        const timer = latencyMs === null ? undefined : setTimeout(answer, latencyMs);
        signal.addEventListener('abort', () => {
          if (timer !== undefined) clearTimeout(timer);
          done();
          reject(signal.reason);
        });
      });
    },
    forget: () => Promise.resolve(),
    close: () => Promise.resolve(),
  };
  return p;
}

function checker(
  endpoints: readonly Endpoint[],
  probes: HealthProbes,
  cfg: Record<string, unknown> = {},
): HealthChecker {
  return new HealthChecker(HealthCheckSchema.parse(cfg), endpoints, {
    random: seededRandom(11),
    now: () => Date.now(),
    connectTimeoutMs: 1000,
    hooks: { onChange: () => undefined },
    probes,
  });
}

function countBy<T>(list: readonly T[], key: (t: T) => unknown): Map<unknown, number> {
  const m = new Map<unknown, number>();
  for (const x of list) m.set(key(x), (m.get(key(x)) ?? 0) + 1);
  return m;
}

describe('health check schedule (fake timers)', () => {
  it('checks each endpoint once per interval, spread over the interval rather than in bursts', async () => {
    vi.useFakeTimers({ now: 0 });
    const eps = fakeEndpoints(300);
    const probes = fakeProbes(2);
    const hc = checker(eps, probes, { interval: '10s', jitter: 0.1 });
    hc.start();
    // The first round goes out within the first jitter span (1 s).
    await vi.advanceTimersByTimeAsync(1010);
    expect(new Set(probes.checks.map((c) => c.endpoint)).size).toBe(300);
    await vi.advanceTimersByTimeAsync(129_000);
    // From 30 s to 130 s: every endpoint 9 to 12 times (interval 10 s ± 10%).
    const late = probes.checks.filter((c) => c.at >= 30_000 && c.at < 130_000);
    const perEndpoint = countBy(late, (c) => c.endpoint);
    expect(perEndpoint.size).toBe(300);
    for (const n of perEndpoint.values()) {
      expect(n).toBeGreaterThanOrEqual(9);
      expect(n).toBeLessThanOrEqual(12);
    }
    // Spread: 30 checks a second on average; no second sees more than twice that.
    const perSecond = countBy(late, (c) => Math.floor(c.at / 1000));
    expect(perSecond.size).toBe(100);
    expect(Math.max(...perSecond.values())).toBeLessThanOrEqual(60);
    expect(probes.checks.every((c) => !c.idle)).toBe(true);
    await hc.close();
  });

  it('never runs more than maxChecksInFlight at once, and still checks every endpoint when all of them hang', async () => {
    vi.useFakeTimers({ now: 0 });
    const eps = fakeEndpoints(1000);
    const probes = fakeProbes(null);
    const cfg = { interval: '10s', timeout: '1s', jitter: 0.1 };
    const hc = checker(eps, probes, cfg);
    const k = maxChecksInFlight(1000, HealthCheckSchema.parse(cfg));
    expect(k).toBe(100);
    expect(hc.maxInFlight).toBe(100);
    hc.start();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(probes.maxInFlight).toBe(100);
    // Every check timed out after 1 s with 100 slots: the rounds still keep up.
    const perEndpoint = countBy(probes.checks, (c) => c.endpoint);
    expect(perEndpoint.size).toBe(1000);
    for (const n of perEndpoint.values()) expect(n).toBeGreaterThanOrEqual(4);
    expect(hc.describe(eps[0]!)).toMatchObject({ lastError: 'no answer within 1000 ms' });
    await hc.close();
  });

  it('checks endpoints out of use at the idle interval, asking for no kept connection; one coming into use within a jitter span', async () => {
    vi.useFakeTimers({ now: 0 });
    const eps = fakeEndpoints(100);
    const probes = fakeProbes(2);
    const hc = checker(eps, probes, { interval: '10s', idleInterval: '60s', jitter: 0.1 });
    const used = eps.slice(0, 10);
    hc.focus(used);
    hc.start();
    await vi.advanceTimersByTimeAsync(300_000);
    const window = probes.checks.filter((c) => c.at >= 60_000 && c.at < 300_000);
    const perEndpoint = countBy(window, (c) => c.endpoint);
    for (const e of used) {
      expect(perEndpoint.get(e)).toBeGreaterThanOrEqual(21);
      expect(perEndpoint.get(e)).toBeLessThanOrEqual(27);
    }
    for (const e of eps.slice(10)) {
      expect(perEndpoint.get(e)).toBeGreaterThanOrEqual(3);
      expect(perEndpoint.get(e)).toBeLessThanOrEqual(5);
    }
    expect(window.every((c) => c.idle === !used.includes(c.endpoint))).toBe(true);
    expect(hc.describe(eps[50]!)?.rate).toBe('idle');

    // eps[50] comes into use: checked within 1 s (the jitter span), then every 10 s.
    const t = Date.now();
    hc.focus([...used, eps[50]!]);
    await vi.advanceTimersByTimeAsync(1000);
    const promptly = probes.checks.filter((c) => c.endpoint === eps[50] && c.at >= t);
    expect(promptly).toHaveLength(1);
    expect(promptly[0]!.idle).toBe(false);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(probes.checks.filter((c) => c.endpoint === eps[50] && c.at >= t).length).toBeGreaterThanOrEqual(3);
    expect(hc.describe(eps[50]!)?.rate).toBe('interval');
    await hc.close();
  });

  it('sweeps many endpoints out of use at idleChecksPerSecond at most: each less often, the total bounded', async () => {
    vi.useFakeTimers({ now: 0 });
    const eps = fakeEndpoints(1010);
    const probes = fakeProbes(2);
    const hc = checker(eps, probes, {
      interval: '10s',
      idleInterval: '60s',
      idleChecksPerSecond: 10,
      jitter: 0.1,
    });
    hc.focus(eps.slice(0, 10));
    hc.start();
    await vi.advanceTimersByTimeAsync(700_000);
    // 1,000 out of use at 10 a second: each every 100 s (± 10%), not every 60 s.
    const late = probes.checks.filter((c) => c.idle && c.at >= 200_000 && c.at < 700_000);
    expect(late.length / 500).toBeGreaterThan(9);
    expect(late.length / 500).toBeLessThan(11);
    const perEndpoint = countBy(late, (c) => c.endpoint);
    for (const n of perEndpoint.values()) {
      expect(n).toBeGreaterThanOrEqual(4);
      expect(n).toBeLessThanOrEqual(6);
    }
    // The ten in use are still checked every 10 s.
    const used = probes.checks.filter((c) => !c.idle && c.at >= 200_000 && c.at < 700_000);
    expect(used.length).toBeGreaterThanOrEqual(10 * 45);
    await hc.close();
  });

  it('an endpoint removed while its check waits for a slot is never checked', async () => {
    vi.useFakeTimers({ now: 0 });
    const eps = fakeEndpoints(8);
    const probes = fakeProbes(null);
    // 8 × 1 s / 10 s rounds up to 1, so the floor of 4 slots applies: the other four wait.
    const hc = checker(eps, probes, { interval: '10s', timeout: '1s', jitter: 0 });
    expect(hc.maxInFlight).toBe(4);
    hc.start();
    await vi.advanceTimersByTimeAsync(1);
    expect(probes.inFlight).toBe(4);
    const waiting = eps.filter((e) => !probes.checks.some((c) => c.endpoint === e));
    expect(waiting).toHaveLength(4);
    hc.remove(waiting[0]!);
    await vi.advanceTimersByTimeAsync(1500);
    expect(probes.checks.some((c) => c.endpoint === waiting[0])).toBe(false);
    expect(probes.checks.filter((c) => waiting.slice(1).includes(c.endpoint))).toHaveLength(3);
    await hc.close();
  });
});
