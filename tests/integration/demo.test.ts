/**
 * `npm run demo` as a newcomer runs it: a real process tree (a redis-server, or the memory store
 * when none is installed; the gateway; two registering instances; traffic). It routes requests to
 * the registered instances, and one SIGINT stops everything in order and leaves nothing behind.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { until } from '../helpers/until.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface Demo {
  readonly child: ChildProcess;
  readonly lines: string[];
  readonly exited: Promise<number | null>;
}

const running: Demo[] = [];
afterEach(async () => {
  // SIGTERM, not SIGKILL: the demo then stops (or kills) what it started; SIGKILL would leave the
  // gateway and redis-server it runs in process groups of their own.
  for (const d of running.splice(0)) {
    if (d.child.exitCode !== null || d.child.signalCode !== null) continue;
    d.child.kill('SIGTERM');
    const exited = await Promise.race([d.exited.then(() => true), sleep(20_000, false)]);
    if (!exited) d.child.kill('SIGKILL');
  }
});

function startDemo(env: NodeJS.ProcessEnv = {}): Demo {
  const child = spawn(process.execPath, [join(ROOT, 'examples/demo/run.ts')], {
    cwd: ROOT,
    env: { ...process.env, PEREGRINE_DEMO_INTERVAL_MS: '100', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  for (const s of [child.stdout!, child.stderr!])
    createInterface({ input: s }).on('line', (l) => lines.push(l));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const demo = { child, lines, exited };
  running.push(demo);
  return demo;
}

/** The URL on the banner line labelled `label`. */
function bannerUrl(lines: string[], label: string): string {
  const pattern = new RegExp(`^\\s+${label}\\s+(http\\S+)`);
  for (const l of lines) {
    const m = pattern.exec(l);
    if (m !== null) return m[1]!;
  }
  throw new Error(`no "${label}" URL in:\n${lines.join('\n')}`);
}

const answers = async (url: string): Promise<boolean> => {
  try {
    await fetch(url, { signal: AbortSignal.timeout(500) });
    return true;
  } catch {
    return false;
  }
};

async function runDemo(env: NodeJS.ProcessEnv, store: RegExp): Promise<void> {
  const demo = startDemo(env);
  await until(
    'the demo banner',
    () => demo.lines.some((l) => l.startsWith('Ctrl-C stops everything')),
    30_000,
  );
  const { lines } = demo;
  expect(lines.find((l) => l.trimStart().startsWith('registry store'))).toMatch(store);
  const dir = lines.find((l) => l.startsWith('Peregrine demo (files in '))!.slice(25, -1);
  const gateway = bannerUrl(lines, 'gateway').replace(/\/$/, '');
  const admin = bannerUrl(lines, 'metrics').replace(/\/metrics$/, '');
  const registry = bannerUrl(lines, 'registry').replace(/\/v1\/services$/, '');
  await until('the trickle reaches an instance', () => lines.some((l) => / → 200 from hello-[12] /.test(l)));

  // A request of our own goes to one of the two registered instances.
  const res = await fetch(`${gateway}/hello/from-the-test`);
  expect(res.status).toBe(200);
  const body = (await res.json()) as { service: string; instance: string; path: string; traceId: string };
  expect(body).toMatchObject({ service: 'hello', path: '/hello/from-the-test' });
  expect(body.traceId).toMatch(/^[0-9a-f]{32}$/);
  const token = readFileSync(join(dir, 'registry-token'), 'utf8').trim();
  const registered = (await (
    await fetch(`${registry}/v1/services/hello`, { headers: { authorization: `Bearer ${token}` } })
  ).json()) as { instances: { id: string; port: number; state: string }[] };
  expect(registered.instances.map((i) => i.id)).toEqual(['hello-1', 'hello-2']);
  const served = registered.instances.find((i) => i.id === body.instance);
  expect(served).toMatchObject({ state: 'active' });
  const upstreams = (await (await fetch(`${admin}/v1/upstreams`)).json()) as {
    upstreams: { name: string; endpoints: { id: string; source: string }[] }[];
  };
  const hello = upstreams.upstreams.find((u) => u.name === 'hello')!;
  expect(hello.endpoints.map((e) => e.source)).toEqual(['registry', 'registry']);
  expect(hello.endpoints.map((e) => e.id)).toContain(`http://127.0.0.1:${served!.port}`);

  // One SIGINT to the demo alone: instances drain and deregister, then everything stops.
  demo.child.kill('SIGINT');
  expect(await demo.exited).toBe(0);
  for (const id of ['hello-1', 'hello-2']) {
    const draining = lines.findIndex((l) => l.startsWith(`[${id}] SIGINT: draining`));
    const deregistered = lines.indexOf(`[${id}] deregistered`);
    expect(draining).toBeGreaterThanOrEqual(0);
    expect(deregistered).toBeGreaterThan(draining);
  }
  expect(lines.at(-1)).toBe('demo stopped cleanly');
  expect(lines.some((l) => / → 5\d\d /.test(l) || l.includes(' failed: '))).toBe(false);
  expect(existsSync(dir)).toBe(false);
  for (const url of [gateway, admin, registry]) expect(await answers(url)).toBe(false);
}

describe('npm run demo', () => {
  it('with a local redis-server: routes to the registered instances and stops cleanly on SIGINT', async () => {
    await runDemo({}, /Redis: a local redis-server at redis:\/\/127\.0\.0\.1:\d+/);
  }, 60_000);

  it('without redis-server: the memory store, the same routing and clean stop', async () => {
    await runDemo({ REDIS_SERVER_BIN: '/nonexistent/redis-server' }, /in memory/);
  }, 60_000);
});
