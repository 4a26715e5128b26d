import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dueCount, PacedLoad, pacedFailures, runPaced } from '../../../bench/lib/paced.ts';
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

  it('in bursts, still sends exactly rate × duration requests (the schedule: dueCount above)', async () => {
    seen = 0;
    const load = new PacedLoad(`${url}/`, 16);
    try {
      // 90 is not a multiple of 16: the last burst is cut short.
      const r = await load.run(900, 0.1, undefined, 16);
      expect(r.sent).toBe(90);
      expect(seen).toBe(90);
      expect(r.statuses).toEqual({ '200': 90 });
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
