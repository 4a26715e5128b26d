import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dueCount, PacedLoad, pacedFailures, runPaced } from '../../../bench/lib/paced.ts';
import { type TurnLatency, turnDifferences } from '../../../bench/lib/paced-turns.ts';
import { summariseLatencies } from '../../../bench/lib/stats.ts';

describe('the paced load schedule', () => {
  it('sends the first request at once and one more every 1/rate s', () => {
    expect(dueCount(-1, 1000)).toBe(0);
    expect(dueCount(0, 1000)).toBe(1);
    expect(dueCount(0.999, 1000)).toBe(1);
    expect(dueCount(1, 1000)).toBe(2);
    expect(dueCount(999.9, 100)).toBe(100);
    expect(dueCount(1000, 100)).toBe(101);
  });

  it('in bursts, sends `burst` requests at once every burst/rate s', () => {
    expect(dueCount(-1, 800, 16)).toBe(0);
    expect(dueCount(0, 800, 16)).toBe(16);
    expect(dueCount(19.9, 800, 16)).toBe(16);
    expect(dueCount(20, 800, 16)).toBe(32);
    expect(dueCount(999.9, 800, 16)).toBe(800);
    expect(dueCount(5, 1000, 1)).toBe(dueCount(5, 1000));
  });

  it('counts as failed every answer that is not 2xx and every request without one', () => {
    expect(pacedFailures({ statuses: { '200': 10, '204': 1 }, errors: 0 })).toBe(0);
    expect(pacedFailures({ statuses: { '200': 10, '429': 3, '503': 1 }, errors: 2 })).toBe(6);
  });
});

describe('latency summaries', () => {
  it('p50 and p99 by nearest rank, and the max', () => {
    const values = Array.from({ length: 200 }, (_, i) => 200 - i); // 1..200, unsorted
    expect(summariseLatencies(values)).toEqual({ count: 200, p50: 100, p99: 198, max: 200 });
    expect(summariseLatencies([3])).toEqual({ count: 1, p50: 3, p99: 3, max: 3 });
    expect(summariseLatencies([])).toBeUndefined();
  });
});

describe('per-turn differences', () => {
  const turn = (p99: number): TurnLatency => ({ p50: 0, p99, dueP50: 0, dueP99: p99 });

  it('are summarised by their median, which one disturbed turn does not move', () => {
    const a = [2, 2.5, 3, 40, 2.2].map(turn);
    const b = [1.5, 2, 2.5, 1.8, 30].map(turn);
    // Differences 0.5, 0.5, 0.5, 38.2, -27.8: one bad second on each side.
    const d = turnDifferences(a, b, (t) => t.dueP99, 1)!;
    expect(d.turns).toBe(5);
    expect(d.median).toBeCloseTo(0.5, 9);
    expect(d.q1).toBeCloseTo(0.5, 9);
    expect(d.q3).toBeCloseTo(0.5, 9);
    expect(d.above).toBe(1);
  });

  it('leave out turns in which either side had no answers, and are undefined without any', () => {
    const d = turnDifferences([turn(3), undefined, turn(5)], [turn(1), turn(1), undefined], (t) => t.p99)!;
    expect(d.turns).toBe(1);
    expect(d.median).toBe(2);
    expect(turnDifferences([undefined], [turn(1)], (t) => t.p99)).toBeUndefined();
  });
});

describe('PacedLoad against a real server', () => {
  let server: Server;
  let url: string;
  let seen = 0;
  beforeAll(async () => {
    server = createServer((req, res) => {
      seen++;
      res.statusCode = req.url === '/limited' ? 429 : 200;
      res.end('ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  it('sends rate × duration requests, times each, and counts answers by status', async () => {
    seen = 0;
    const r = await runPaced(`${url}/`, { rate: 200, durationS: 0.5, connections: 4 });
    // 0 ms, 5 ms, … up to the end: 100, give or take the last tick.
    expect(r.sent).toBeGreaterThanOrEqual(99);
    expect(r.sent).toBeLessThanOrEqual(101);
    expect(seen).toBe(r.sent);
    expect(r.statuses).toEqual({ '200': r.sent });
    expect(r.latenciesMs).toHaveLength(r.sent);
    expect(r.latenciesMs.every((ms) => ms > 0)).toBe(true);
    expect(r.errors).toBe(0);
  });

  it('keeps its connections between runs and sends the headers it is given', async () => {
    const load = new PacedLoad(`${url}/limited`, 2);
    try {
      const a = await load.run(100, 0.2, { 'x-bench-trial': 't' });
      const b = await load.run(100, 0.2);
      expect(a.statuses['429']).toBe(a.sent);
      expect(pacedFailures(b)).toBe(b.sent);
    } finally {
      await load.close();
    }
  });

  it('times each answer from when it was due too, so a stall of the sending loop is counted', async () => {
    const load = new PacedLoad(`${url}/`, 4);
    try {
      // The loop stalls for 100 ms, 100 ms in: the requests due meanwhile go out late, together.
      setTimeout(() => {
        const until = performance.now() + 100;
        while (performance.now() < until);
      }, 100);
      const r = await load.run(200, 0.5);
      expect(r.intendedLatenciesMs).toHaveLength(r.latenciesMs.length);
      const early = r.latenciesMs.filter((ms, i) => r.intendedLatenciesMs[i]! < ms - 1e-6);
      expect(early).toEqual([]);
      const slow = (xs: readonly number[]) => xs.filter((ms) => ms > 30).length;
      // 20 requests fell due in the stall, the first 14 of them more than 30 ms before it ended;
      // timed from sending, only those in flight when it began took that long (and any a busy
      // machine slowed, which are slow timed from when due as well).
      expect(slow(r.intendedLatenciesMs)).toBeGreaterThanOrEqual(10);
      expect(slow(r.intendedLatenciesMs) - slow(r.latenciesMs)).toBeGreaterThanOrEqual(8);
    } finally {
      await load.close();
    }
  });

  it('in bursts, still sends exactly rate × duration requests (the schedule: dueCount above)', async () => {
    seen = 0;
    const load = new PacedLoad(`${url}/`, 16);
    try {
      // 90 is not a multiple of 16: the last burst is cut short.
      const r = await load.run(900, 0.1, undefined, 16);
      expect(r.sent).toBe(90);
      expect(seen).toBe(90);
      expect(r.statuses).toEqual({ '200': 90 });
      // A burst's requests were all due when it went out.
      expect(r.latenciesMs.filter((ms, i) => r.intendedLatenciesMs[i]! < ms - 1e-6)).toEqual([]);
    } finally {
      await load.close();
    }
  });

  it('counts requests that get no answer as errors', async () => {
    const r = await runPaced('http://127.0.0.1:1/', { rate: 100, durationS: 0.1, connections: 1 });
    expect(r.errors).toBe(r.sent);
    expect(r.latenciesMs).toEqual([]);
  });
});
