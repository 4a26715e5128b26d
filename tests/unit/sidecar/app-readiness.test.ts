/**
 * The application's readiness with thresholds, against a real HTTP application whose answers the
 * test scripts probe by probe: state changes are asserted at exact probe counts, not at times.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  AppReadiness,
  type AppReadinessOptions,
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

/**
 * Answers the n-th probe (1-based) with `status(n)`, after holding the event loop (the test's, and
 * so the prober's) for `busyMs(n)`: a probe in flight while the sidecar's loop is blocked.
 */
async function scriptedApp(
  status: (n: number) => number,
  busyMs?: (n: number) => number,
): Promise<ScriptedApp> {
  const app = { url: '', probes: 0, close: async () => undefined } as ScriptedApp;
  const server: Server = createServer((_req, res) => {
    app.probes += 1;
    const until = performance.now() + (busyMs?.(app.probes) ?? 0);
    while (performance.now() < until);
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

type Thresholds = Pick<AppReadinessOptions, 'failureThreshold' | 'successThreshold'>;

/** Probes of `app`, closed after the test, with the changes they make and the probe count at each. */
function probing(
  app: ScriptedApp,
  opts: Partial<AppReadinessOptions> & Thresholds,
): { readiness: AppReadiness; changes: (ReadinessChange & { probe: number })[] } {
  const readiness = new AppReadiness({
    path: '/ready',
    intervalMs: 5,
    timeoutMs: 2000,
    app: app.url,
    ...opts,
  });
  opened.push(readiness);
  const changes = follow(readiness, app);
  readiness.start();
  return { readiness, changes };
}

function follow(readiness: AppReadiness, app: ScriptedApp): (ReadinessChange & { probe: number })[] {
  const changes: (ReadinessChange & { probe: number })[] = [];
  readiness.on('change', (c: ReadinessChange) => changes.push({ ...c, probe: app.probes }));
  return changes;
}

describe('ReadinessThresholds', () => {
  it('turns not ready after failureThreshold failures in a row, ready after successThreshold passes', () => {
    const t = new ReadinessThresholds(3, 2);
    // [probe passed, state changed by it]
    const script: [boolean, boolean][] = [
      [true, false],
      [true, true], // ready after two passes
      [false, false],
      [false, false],
      [true, false], // two failures, then a pass: the run is broken, still ready
      [false, false],
      [false, false],
      [false, true], // not ready after three failures in a row
      [true, false],
      [false, false], // one pass is not enough to come back; a failure restarts the run
      [true, false],
      [true, true], // ready again after two passes in a row
    ];
    const states: boolean[] = [];
    for (const [passed] of script) {
      states.push(t.record(passed));
      if (states.length === 8) expect([t.ready, t.consecutive]).toEqual([false, 3]);
    }
    expect(states).toEqual(script.map(([, changed]) => changed));
    expect([t.ready, t.consecutive]).toEqual([true, 2]);
  });

  it('with thresholds of 1 follows every probe', () => {
    const t = new ReadinessThresholds(1, 1);
    expect(t.record(false)).toBe(false);
    expect(t.record(true)).toBe(true);
    expect(t.record(false)).toBe(true);
  });
});

describe('AppReadiness', () => {
  it('one failed probe does not drain; failureThreshold in a row do; successThreshold bring it back', async () => {
    // Probes 1-2 pass (ready); 3 fails alone; 5-7 fail in a row; 8 passes alone, 9 fails; 10-11 pass.
    const failing = new Set([3, 5, 6, 7, 9]);
    const app = await scriptedApp((n) => (failing.has(n) ? 503 : 200));
    opened.push(app);
    const { readiness, changes } = probing(app, { failureThreshold: 3, successThreshold: 2 });
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
    // Probes 2-4 are answered after the loop was held for three timeouts: their timers fire late,
    // before the answers (sent at once after the hold) are read.
    const app = await scriptedApp(
      () => 200,
      (n) => (n >= 2 && n <= 4 ? 600 : 0),
    );
    opened.push(app);
    const { readiness, changes } = probing(app, {
      intervalMs: 20,
      timeoutMs: 200,
      failureThreshold: 1,
      successThreshold: 1,
    });
    await until('six probes', () => app.probes >= 6);
    expect(readiness.ready).toBe(true);
    expect(changes.map(({ ready, check }) => ({ ready, check }))).toEqual([{ ready: true, check: '200' }]);
  });

  it('a probe the application does not answer in time fails as a timeout', async () => {
    const app = await scriptedApp(() => 200);
    opened.push(app);
    const { readiness, changes } = probing(app, {
      intervalMs: 10,
      timeoutMs: 100,
      failureThreshold: 2,
      successThreshold: 1,
    });
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
