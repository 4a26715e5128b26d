/**
 * The registration client and `peregrine register` against a real gateway: registration, renewals
 * that keep the lease, re-registration when the registry forgets the lease (404, a restarted
 * gateway), backoff on errors, drain then deregistration on close and on SIGTERM, and refusals
 * that retrying cannot fix.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ConfigInput } from '../../src/config/schema.ts';
import { RegistrationClient, RegistrationRejectedError } from '../../src/registry/client.ts';
import type { InstanceChange } from '../../src/registry/store.ts';
import { eventually } from '../conformance/registry-store.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { freePort } from '../helpers/ports.ts';

const TOKEN = 'client-test-token-0123456789abcdef';
const TOKEN_ENV = 'PEREGRINE_TEST_CLIENT_TOKEN';
const TTL = 900;
const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));

let registryPort: number;
let gw: TestGateway;
const clients: RegistrationClient[] = [];

function gatewayConfig(): Partial<ConfigInput> {
  return {
    registry: {
      gatewayId: 'gw-client-test',
      listener: { address: `127.0.0.1:${registryPort}` },
      credentials: { tokens: [{ name: 'tests', env: TOKEN_ENV, services: ['payments', 'cli-*'] }] },
      addresses: { allowLoopback: true },
      lease: { minTtl: '300ms' },
      sync: { sweepInterval: '50ms' },
    },
  };
}

function client(
  overrides: Partial<ConstructorParameters<typeof RegistrationClient>[0]> = {},
): RegistrationClient {
  const c = new RegistrationClient({
    registry: `http://127.0.0.1:${registryPort}`,
    service: 'payments',
    port: 7001,
    address: '127.0.0.1',
    ttlMs: TTL,
    token: TOKEN,
    drainDelayMs: 300,
    backoff: { initialMs: 20, maxMs: 200 },
    ...overrides,
  });
  clients.push(c);
  return c;
}

const store = () => gw.gateway.registry!.store;

beforeAll(async () => {
  process.env[TOKEN_ENV] = TOKEN;
  registryPort = await freePort();
  gw = await startGateway(gatewayConfig());
});
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
});
afterAll(async () => {
  await gw?.close();
  delete process.env[TOKEN_ENV];
});

describe('RegistrationClient', () => {
  it('registers, and its renewals keep the lease alive over several TTLs', async () => {
    // A lease long enough that a loaded machine's stalls (a second and more) do not end it: the
    // renewals, not the margin, must keep it.
    const ttl = 3 * TTL;
    const c = client({ id: 'keep-1', ttlMs: ttl });
    const instance = await c.start();
    expect(instance).toMatchObject({
      service: 'payments',
      id: 'keep-1',
      address: '127.0.0.1',
      port: 7001,
      ttlMs: ttl,
    });
    expect(c.state).toBe('registered');
    const first = store().get('payments', 'keep-1')!;
    await sleep(ttl * 2.5);
    const now = store().get('payments', 'keep-1');
    expect(now).toBeDefined();
    expect(now!.lastHeartbeat).toBeGreaterThan(first.lastHeartbeat);
    expect(now!.registeredAt).toBe(first.registeredAt);
  });

  it('registers again when a renewal answers 404 (the registry lost the lease)', async () => {
    const c = client({ id: 'lost-1' });
    await c.start();
    let reregistered = 0;
    c.on('reregistered', () => reregistered++);
    await store().deregister('payments', 'lost-1');
    expect(store().get('payments', 'lost-1')).toBeUndefined();
    // Within one renewal interval (a third of the TTL, ±10%) it is back.
    await eventually(() => expect(store().get('payments', 'lost-1')).toBeDefined(), TTL / 3 + 300);
    expect(reregistered).toBe(1);
  });

  it('a restarted gateway (embedded registry, empty) is refilled within about one renewal interval', async () => {
    const c = client({ id: 'restart-1' });
    await c.start();
    await gw.close();
    await sleep(TTL / 2);
    gw = await startGateway(gatewayConfig());
    const restartedAt = performance.now();
    await eventually(() => expect(store().get('payments', 'restart-1')).toBeDefined(), 2000);
    // Renewal interval (≈300 ms) plus the backoff the outage caused (at most the interval).
    expect(performance.now() - restartedAt).toBeLessThan(2 * (TTL / 3) * 1.1 + 300);
  });

  it('close() drains, waits drainDelay, then deregisters', async () => {
    const c = client({ id: 'close-1', drainDelayMs: 400 });
    await c.start();
    const seen: { change: InstanceChange; at: number }[] = [];
    const stop = store().watch('payments', (change) => seen.push({ change, at: performance.now() }));
    await c.close();
    stop();
    expect(seen.map((s) => `${s.change.type}:${s.change.cause}`)).toEqual([
      'upsert:drained',
      'remove:deregistered',
    ]);
    expect(seen[1]!.at - seen[0]!.at).toBeGreaterThanOrEqual(380);
    expect(c.state).toBe('closed');
    await c.close();
  });

  it('setState() drains the registration and makes it active again; renewals keep the state', async () => {
    const c = client({ id: 'state-1', state: 'draining' });
    await c.start();
    expect(store().get('payments', 'state-1')?.state).toBe('draining');
    c.setState('active');
    await eventually(() => expect(store().get('payments', 'state-1')?.state).toBe('active'), 2000);
    c.setState('draining');
    await eventually(() => expect(store().get('payments', 'state-1')?.state).toBe('draining'), 2000);
    const renewedBefore = store().get('payments', 'state-1')!.lastHeartbeat;
    await eventually(
      () => expect(store().get('payments', 'state-1')!.lastHeartbeat).toBeGreaterThan(renewedBefore),
      TTL,
    );
    expect(store().get('payments', 'state-1')?.state).toBe('draining');
    expect(c.registeredState).toBe('draining');
  });

  it('start() rejects when the registry refuses the registration itself', async () => {
    const forbidden = client({ service: 'users' });
    const err = await forbidden.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RegistrationRejectedError);
    expect((err as RegistrationRejectedError).status).toBe(403);
    const badAddress = client({ id: 'bad-addr', address: '169.254.169.254' });
    const err2 = await badAddress.start().catch((e: unknown) => e);
    expect((err2 as RegistrationRejectedError).code).toBe('ADDRESS_NOT_ALLOWED');
  });
});

describe('RegistrationClient against a failing registry', () => {
  let fake: Server | undefined;
  afterEach(async () => {
    await new Promise<void>((resolve) => (fake ? fake.close(() => resolve()) : resolve()));
    fake = undefined;
  });

  it('asks for no body on heartbeats (Prefer: return=minimal) and takes 204 or 200 alike', async () => {
    const seen: { method: string; url: string; prefer: string | undefined }[] = [];
    fake = createServer((req, res) => {
      seen.push({ method: req.method!, url: req.url!, prefer: req.headers.prefer as string | undefined });
      req.resume();
      if (req.method === 'PUT') {
        res.writeHead(201, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ instance: { service: 'payments', id: 'm-1', ttlMs: 300 } }));
        return;
      }
      // Renewals alternate: a registry that applies the preference (204), one that ignores it (200).
      const beats = seen.filter((s) => s.url.endsWith('/heartbeat')).length;
      if (beats % 2 === 1) res.writeHead(204, { 'preference-applied': 'return=minimal' }).end();
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{"outcome":"renewed"}');
    });
    await new Promise<void>((resolve) => fake!.listen(0, '127.0.0.1', resolve));
    const c = client({
      registry: `http://127.0.0.1:${(fake.address() as AddressInfo).port}`,
      id: 'm-1',
      ttlMs: 300,
    });
    let failures = 0;
    let reregistered = 0;
    c.on('failure', () => failures++);
    c.on('reregistered', () => reregistered++);
    await c.start();
    await eventually(
      () => expect(seen.filter((s) => s.url.endsWith('/heartbeat')).length).toBeGreaterThanOrEqual(4),
      5000,
    );
    expect({ failures, reregistered }).toEqual({ failures: 0, reregistered: 0 });
    expect(seen.filter((s) => s.method === 'PUT')).toHaveLength(1);
    expect(seen[0]!.prefer).toBeUndefined();
    for (const s of seen.slice(1)) expect(s).toMatchObject({ method: 'POST', prefer: 'return=minimal' });
  });

  it('backs off between retries (doubling, with jitter) and honours Retry-After', async () => {
    const times: number[] = [];
    let answered = 0;
    fake = createServer((req, res) => {
      times.push(performance.now());
      answered++;
      if (answered <= 5) {
        res
          .writeHead(503, { 'content-type': 'application/problem+json' })
          .end('{"code":"REGISTRY_UNAVAILABLE"}');
        return;
      }
      if (answered === 6) {
        res.writeHead(429, { 'retry-after': '1' }).end();
        return;
      }
      req.resume();
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ instance: { service: 'payments', id: 'x', ttlMs: 60_000 } }));
    });
    await new Promise<void>((resolve) => fake!.listen(0, '127.0.0.1', resolve));
    const c = client({
      registry: `http://127.0.0.1:${(fake.address() as AddressInfo).port}`,
      id: 'x',
      ttlMs: 60_000,
      backoff: { initialMs: 40, maxMs: 10_000 },
    });
    let failures = 0;
    c.on('failure', () => failures++);
    await c.start();
    expect(failures).toBe(6);
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    // Backoff n is 40·2^(n-1) ms, less up to half of it for jitter.
    gaps.slice(0, 5).forEach((gap, i) => {
      expect(gap).toBeGreaterThanOrEqual(40 * 2 ** i * 0.5 - 5);
    });
    expect(gaps[4]!).toBeGreaterThan(gaps[0]! * 2);
    // The 429 asked for a second.
    expect(gaps[5]!).toBeGreaterThanOrEqual(990);
  });
});

describe('peregrine register', () => {
  const children: ChildProcess[] = [];
  afterEach(() => {
    for (const c of children.splice(0)) c.kill('SIGKILL');
  });

  function register(args: string[]): {
    proc: ChildProcess;
    output: () => string;
    exit: Promise<number | null>;
  } {
    const proc = spawn(process.execPath, [MAIN, 'register', ...args], {
      env: { ...process.env, [TOKEN_ENV]: TOKEN },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(proc);
    let output = '';
    proc.stdout!.on('data', (c) => (output += c));
    proc.stderr!.on('data', (c) => (output += c));
    const exit = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    return { proc, output: () => output, exit };
  }

  const base = () => [
    '--registry',
    `http://127.0.0.1:${registryPort}`,
    '--address',
    '127.0.0.1',
    '--token-env',
    TOKEN_ENV,
    '--ttl',
    '900ms',
    '--drain-delay',
    '300ms',
  ];

  it('keeps an instance registered until SIGTERM, then drains, deregisters and exits 0', async () => {
    const cli = register([
      '--service',
      'cli-web',
      '--port',
      '7100',
      '--id',
      'web-1',
      '--metadata',
      'lang=go',
      ...base(),
    ]);
    await eventually(() => expect(store().get('cli-web', 'web-1')).toBeDefined(), 10_000);
    expect(store().get('cli-web', 'web-1')).toMatchObject({ port: 7100, metadata: { lang: 'go' } });
    await sleep(TTL * 2);
    expect(store().get('cli-web', 'web-1')).toBeDefined();
    const seen: string[] = [];
    const stop = store().watch('cli-web', (c) => seen.push(`${c.type}:${c.cause}`));
    cli.proc.kill('SIGTERM');
    expect(await cli.exit).toBe(0);
    stop();
    expect(seen).toEqual(['upsert:drained', 'remove:deregistered']);
    expect(cli.output()).toContain('registered cli-web/web-1 at 127.0.0.1:7100');
    expect(cli.output()).toContain('deregistered cli-web/web-1');
    expect(cli.output()).not.toContain(TOKEN);
  }, 20_000);

  it('exits 1 when the registry refuses the registration, 2 on usage errors', async () => {
    const refused = register(['--service', 'users', '--port', '7100', ...base()]);
    expect(await refused.exit).toBe(1);
    expect(refused.output()).toContain('403 FORBIDDEN');
    const usage = register(['--service', 'cli-web', '--registry', 'http://127.0.0.1:1']);
    expect(await usage.exit).toBe(2);
    expect(usage.output()).toContain('--port is required');
  }, 20_000);
});
