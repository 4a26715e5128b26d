import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Endpoint } from '../../../src/dataplane/upstream/endpoint.ts';
import { OutlierDetector } from '../../../src/dataplane/upstream/outlier-detector.ts';
import { OutlierDetectionSchema } from '../../../src/dataplane/upstream/policy-schema.ts';
import { closeAll, endpoints } from './helpers.ts';

const opened: Endpoint[] = [];
afterAll(() => closeAll(opened));

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

function setup(n: number, cfg: Record<string, unknown> = {}) {
  const list = endpoints(n);
  opened.push(...list);
  const events: string[] = [];
  const durations: number[] = [];
  const detector = new OutlierDetector(OutlierDetectionSchema.parse(cfg), n, {
    now: () => Date.now(),
    hooks: {
      onEject: (e, reason, ms) => {
        events.push(`eject ${list.indexOf(e)} (${reason})`);
        durations.push(ms);
      },
      onReturn: (e) => events.push(`return ${list.indexOf(e)}`),
    },
  });
  /** One attempt result: 'gw' gateway error, '5xx' other 5xx, 'ok' anything else. */
  const result = (i: number, kind: 'gw' | '5xx' | 'ok', times = 1) => {
    for (let k = 0; k < times; k++) detector.onResult(list[i]!, kind === 'gw', kind !== 'ok', Date.now());
  };
  return { list, detector, events, durations, result };
}

describe('OutlierDetector', () => {
  it('ejects after N consecutive gateway errors; anything else in between resets the run', () => {
    const { list, events, result } = setup(4);
    result(0, 'gw', 4);
    result(0, 'ok');
    result(0, 'gw', 4);
    result(0, '5xx'); // a 500 is not a gateway error
    result(0, 'gw', 4);
    expect(list[0]!.ejected).toBe(false);
    result(0, 'gw');
    expect(list[0]!.ejected).toBe(true);
    expect(events).toEqual(['eject 0 (5 consecutive gateway errors)']);
  });

  it('consecutive5xx counts every 5xx when enabled', () => {
    const { list, events, result } = setup(4, { consecutiveGatewayErrors: 0, consecutive5xx: 3 });
    result(1, '5xx', 2);
    result(1, 'gw');
    expect(list[1]!.ejected).toBe(true);
    expect(events).toEqual(['eject 1 (3 consecutive 5xx)']);
  });

  it('returns an ejected endpoint when its time is up, with no traffic needed', () => {
    const { list, detector, events, result } = setup(4, { baseEjectionTime: '30s' });
    result(2, 'gw', 5);
    expect(detector.ejectedCount).toBe(1);
    vi.advanceTimersByTime(29_999);
    expect(list[2]!.ejected).toBe(true);
    vi.advanceTimersByTime(1);
    expect(list[2]!.ejected).toBe(false);
    expect(detector.ejectedCount).toBe(0);
    expect(events).toEqual(['eject 2 (5 consecutive gateway errors)', 'return 2']);
  });

  it('ejects for longer each time (base × count), capped at maxEjectionTime', () => {
    const { durations, result } = setup(2, { baseEjectionTime: '30s', maxEjectionTime: '100s' });
    for (let i = 0; i < 5; i++) {
      result(0, 'gw', 5);
      vi.advanceTimersByTime(durations.at(-1)!);
    }
    expect(durations).toEqual([30_000, 60_000, 90_000, 100_000, 100_000]);
  });

  it('forgives one ejection per baseEjectionTime spent back in service', () => {
    const { list, durations, result } = setup(2, { baseEjectionTime: '10s' });
    result(0, 'gw', 5);
    vi.advanceTimersByTime(10_000);
    result(0, 'gw', 5);
    vi.advanceTimersByTime(20_000);
    expect(list[0]!.ejections).toBe(2);
    vi.advanceTimersByTime(25_000); // 2.5 base periods healthy: count 2 → 0, next is the 1st again
    result(0, 'gw', 5);
    expect(durations).toEqual([10_000, 20_000, 10_000]);
  });

  it('never ejects more than maxEjectionPercent; the next outlier goes once there is room', () => {
    const { list, detector, result } = setup(4, { maxEjectionPercent: 50, baseEjectionTime: '30s' });
    result(0, 'gw', 5);
    vi.advanceTimersByTime(10_000);
    result(1, 'gw', 5);
    result(2, 'gw', 5);
    expect(list.map((e) => e.ejected)).toEqual([true, true, false, false]);
    expect(detector.ejectedCount).toBe(2);
    vi.advanceTimersByTime(20_000); // endpoint 0 returns
    expect(list[0]!.ejected).toBe(false);
    result(2, 'gw');
    expect(list.map((e) => e.ejected)).toEqual([false, true, true, false]);
  });

  it('never ejects the only endpoint at the default 50%', () => {
    const { list, result } = setup(1);
    result(0, 'gw', 50);
    expect(list[0]!.ejected).toBe(false);
  });

  it('close() cancels the return timers', () => {
    const { list, detector, events, result } = setup(2);
    result(0, 'gw', 5);
    detector.close();
    vi.advanceTimersByTime(60_000);
    expect(events).toEqual(['eject 0 (5 consecutive gateway errors)']);
    expect(vi.getTimerCount()).toBe(0);
    expect(list[0]!.ejected).toBe(true);
  });
});
