import { describe, expect, it } from 'vitest';
import { selectGroups } from '../../../bench/lib/feature-bench.ts';
import { goal, info } from '../../../bench/lib/goals.ts';
import { sliceOrder } from '../../../bench/lib/paced-turns.ts';
import { trialOf } from '../../../bench/lib/ratelimit-accuracy.ts';
import { churnStep } from '../../../bench/lib/registry-churn.ts';
import { checkTable } from '../../../bench/lib/report.ts';
import { registryStores } from '../../../bench/registry.ts';

describe('feature benchmark groups (BENCH_GROUPS)', () => {
  const all = [{ id: 'throughput' }, { id: 'heartbeats' }, { id: 'churn' }];

  it('runs every group unless told, in their own order, and refuses unknown names', () => {
    expect(selectGroups(all, undefined)).toEqual(all);
    expect(selectGroups(all, '')).toEqual(all);
    expect(selectGroups(all, 'churn, throughput').map((g) => g.id)).toEqual(['throughput', 'churn']);
    expect(() => selectGroups(all, 'churn,latency')).toThrow(
      /unknown latency; known: throughput, heartbeats, churn/,
    );
  });

  it('BENCH_REGISTRY_STORES: memory and redis unless told, nothing else', () => {
    expect(registryStores(undefined)).toEqual(['memory', 'redis']);
    expect(registryStores('redis')).toEqual(['redis']);
    expect(() => registryStores('memory,etcd')).toThrow(/"etcd" is not memory or redis/);
  });
});

describe('goal rows', () => {
  it('mark PASS, MISS, or n/a when nothing was measured', () => {
    expect(goal('cpu', 4.2, '≤', 5, '%')).toMatchObject({ goal: '≤ 5%', result: 'PASS' });
    expect(goal('cpu', 5.01, '≤', 5, '%').result).toBe('MISS');
    expect(goal('ratio', 0.98, '≥', 0.98, 'ratio')).toMatchObject({ goal: '≥ 0.98', result: 'PASS' });
    expect(goal('failed', 1, '=', 0, 'count')).toMatchObject({ goal: '= 0', result: 'MISS' });
    expect(goal('p99', undefined, '≤', 1, 'ms')).toMatchObject({ goal: '≤ 1 ms', result: 'n/a' });
    expect(info('x', 3, 'count')).toMatchObject({ result: 'info' });
  });

  it('print with their units in the goals table', () => {
    const table = checkTable([
      goal('added p99', 0.42, '≤', 1, 'ms'),
      goal('gateway CPU', 3.456, '≤', 5, '%'),
      goal('failed', 12345, '=', 0, 'count'),
      info('ratio', 0.987, 'ratio'),
    ]);
    expect(table).toMatch(/\| added p99 +\| +0\.42 ms \| ≤ 1 ms +\| PASS/);
    expect(table).toMatch(/\| gateway CPU +\| +3\.46% \| ≤ 5% +\| PASS/);
    expect(table).toMatch(/\| failed +\| +12,345 \| = 0 +\| MISS/);
    expect(table).toMatch(/\| ratio +\| +0\.99 \| +\| +\|/);
  });
});

describe('churn steps', () => {
  it('adds when nothing churns, removes when the pool is used up, else either at random', () => {
    expect(churnStep(0, 6, 0.9)).toBe('add');
    expect(churnStep(6, 6, 0.1)).toBe('remove');
    expect(churnStep(3, 6, 0.1)).toBe('add');
    expect(churnStep(3, 6, 0.9)).toBe('remove');
  });
});

describe('latency slices', () => {
  it('take turns forward, then reversed', () => {
    expect(sliceOrder(['a', 'b', 'c'], 0)).toEqual(['a', 'b', 'c']);
    expect(sliceOrder(['a', 'b', 'c'], 1)).toEqual(['c', 'b', 'a']);
    expect(sliceOrder(['a', 'b', 'c'], 2)).toEqual(['a', 'b', 'c']);
  });
});

describe('accuracy trials', () => {
  it('add up both replicas: 200 admitted, 429 limited, anything else failed', () => {
    expect(
      trialOf([
        { sent: 250, statuses: { '200': 60, '429': 190 }, errors: 0 },
        { sent: 250, statuses: { '200': 40, '429': 207, '503': 1 }, errors: 2 },
      ]),
    ).toEqual({ sent: 500, admitted: 100, limited: 397, failed: 3 });
  });
});
