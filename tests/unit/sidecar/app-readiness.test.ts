/**
 * The application's readiness with thresholds, against a real HTTP application whose answers the
 * test scripts probe by probe: state changes are asserted at exact probe counts, not at times.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  AppReadiness,
  type ReadinessChange,
  ReadinessThresholds,
} from '../../../src/sidecar/app-readiness.ts';
import { until } from '../../helpers/until.ts';

interface ScriptedApp {
  url: string;
  /** Probes answered so far. */
  probes: number;
  close(): Promise<void>;
}

/** Answers the n-th probe (1-based) with `status(n)`. */
async function scriptedApp(status: (n: number) => number): Promise<ScriptedApp> {
  const app = { url: '', probes: 0, close: async () => undefined } as ScriptedApp;
  const server: Server = createServer((_req, res) => {
    app.probes += 1;
    res.statusCode = status(app.probes);
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  app.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  app.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return app;
}

const opened: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.close();
});

function follow(readiness: AppReadiness, app: ScriptedApp): (ReadinessChange & { probe: number })[] {
  const changes: (ReadinessChange & { probe: number })[] = [];
  readiness.on('change', (c: ReadinessChange) => changes.push({ ...c, probe: app.probes }));
  return changes;
}

describe('ReadinessThresholds', () => {
  it('turns not ready after failureThreshold failures in a row, ready after successThreshold passes', () => {
    const t = new ReadinessThresholds(3, 2);
    expect(t.record(true)).toBe(false);
    expect(t.record(true)).toBe(true);
    expect(t.ready).toBe(true);
    // Two failures, then a pass: the run is broken, still ready.
    expect(t.record(false)).toBe(false);
    expect(t.record(false)).toBe(false);
    expect(t.record(true)).toBe(false);
    expect(t.record(false)).toBe(false);
    expect(t.record(false)).toBe(false);
    expect(t.record(false)).toBe(true);
    expect(t.ready).toBe(false);
    expect(t.consecutive).toBe(3);
    // One pass is not enough to come back with successThreshold 2; a failure restarts the run.
    expect(t.record(true)).toBe(false);
    expect(t.record(false)).toBe(false);
    expect(t.record(true)).toBe(false);
    expect(t.record(true)).toBe(true);
    expect(t.ready).toBe(true);
    expect(t.consecutive).toBe(2);
  });

  it('with thresholds of 1 follows every probe', () => {
    const t = new ReadinessThresholds(1, 1);
    expect(t.record(false)).toBe(false);
    expect(t.record(true)).toBe(true);
    expect(t.record(false)).toBe(true);
  });
});

describe('AppReadiness', () => {
  const base = { path: '/ready', intervalMs: 5, timeoutMs: 2000 };

  it('one failed probe does not drain; failureThreshold in a row do; successThreshold bring it back', async () => {
    // Probes 1-2 pass (ready); 3 fails alone; 5-7 fail in a row; 8 passes alone, 9 fails; 10-11 pass.
    const failing = new Set([3, 5, 6, 7, 9]);
    const app = await scriptedApp((n) => (failing.has(n) ? 503 : 200));
    opened.push(app);
    const readiness = new AppReadiness({ ...base, app: app.url, failureThreshold: 3, successThreshold: 2 });
    opened.push(readiness);
    const changes = follow(readiness, app);
    readiness.start();
    await until('twelve probes', () => app.probes >= 12);
    await readiness.close();
    expect(
      changes.map(({ ready, check, consecutive, probe }) => ({ ready, check, consecutive, probe })),
    ).toEqual([
      { ready: true, check: '200', consecutive: 2, probe: 2 },
      { ready: false, check: '503', consecutive: 3, probe: 7 },
      { ready: true, check: '200', consecutive: 2, probe: 11 },
    ]);
  });

  it("does not count the sidecar's own event-loop lag against the application", async () => {
    const app = await scriptedApp(() => 200);
    opened.push(app);
    const readiness = new AppReadiness({
      ...base,
      intervalMs: 20,
      timeoutMs: 200,
      app: app.url,
      failureThreshold: 1,
      successThreshold: 1,
    });
    opened.push(readiness);
    const changes = follow(readiness, app);
    readiness.start();
    await readiness.whenReady();
    const before = app.probes;
    // Block the loop for three timeouts while probes are due: the timers fire late, before the
    // (prompt) answers are read.
    for (let i = 0; i < 3; i++) {
      await new Promise((resolve) => setTimeout(resolve, 25));
      const until = performance.now() + 600;
      while (performance.now() < until);
    }
    await until('probes after the lag', () => app.probes >= before + 5);
    expect(readiness.ready).toBe(true);
    expect(changes.map((c) => c.ready)).toEqual([true]);
  });

  it('a probe the application does not answer in time fails as a timeout', async () => {
    const app = await scriptedApp(() => 200);
    opened.push(app);
    const readiness = new AppReadiness({
      ...base,
      path: '/ready',
      app: app.url,
      intervalMs: 10,
      timeoutMs: 100,
      failureThreshold: 2,
      successThreshold: 1,
    });
    opened.push(readiness);
    const changes = follow(readiness, app);
    readiness.start();
    await readiness.whenReady();
    // From now on the application holds every probe.
    await app.close();
    const hold = createServer(() => undefined);
    await new Promise<void>((resolve) => hold.listen(Number(new URL(app.url).port), '127.0.0.1', resolve));
    opened.push({
      close: () =>
        new Promise<void>((resolve) => {
          hold.closeAllConnections();
          hold.close(() => resolve());
        }),
    });
    await until('not ready', () => !readiness.ready);
    expect(changes.at(-1)).toMatchObject({ ready: false, check: 'timeout', consecutive: 2 });
  });
});
