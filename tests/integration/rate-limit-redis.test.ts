/**
 * Rate limits shared through a real redis-server by two real gateway processes (separate
 * `bin/peregrine.js` processes, not two gateways in one process): together they admit exactly the
 * policy's points per window. Then Redis is killed: the insurance limiter takes over (each process
 * its share of the limit), fail-open admits, fail-closed answers 503, none answers 429 for the
 * store's failure and none waits longer than the policy's timeout; a frozen Redis (alive, silent)
 * is cut off at that timeout too. Redis back: the shared limit holds again.
 *
 * Tolerance: none within a window. Each request's counter update is one atomic Lua call on the one
 * Redis (INCRBY and PTTL), so N+1 requests cannot both see N; the windows here (60 s) outlast the
 * test, so no window edge falls inside a burst.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { type GatewayProcess, startGatewayProcess } from '../helpers/gateway-process.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { metricValue, scrape } from '../helpers/tls-client.ts';
import { until } from '../helpers/until.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const N = 20;
/** The insured policy's limit, shared by 2 replicas: 10 each while Redis is down. */
const INSURED = 20;
/** ioredis's own command timeout: far above the policies' 50 ms, so only the policy's bound can explain a quick answer. */
const COMMAND_TIMEOUT_MS = 5000;
/**
 * The counting policies wait up to 1 s for Redis, so a busy test machine never hands their
 * decisions to the degradation while Redis is up (that would change the counts under test). The
 * `slow` policy keeps the default 50 ms: it is the one whose bound is tested.
 */
const PATIENT = { timeout: '1s' };

let redis: TestRedis;
let up: TestUpstream;
let gws: GatewayProcess[] = [];

const KEY_PREFIX = `rl-${randomUUID().slice(0, 8)}:`;

function redisStore(onError: string, extra: Record<string, unknown> = {}) {
  return { type: 'redis', onError, ...(onError === 'insurance' ? { replicas: 2 } : {}), ...extra };
}

/** A store that waits up to 1 s (PATIENT). */
function patientStore(onError: string) {
  return redisStore(onError, PATIENT);
}

beforeAll(async () => {
  redis = await startRedis();
  up = await startUpstream();
  const file = join(mkdtempSync(join(tmpdir(), 'peregrine-rl-')), 'gateway.yaml');
  const route = (name: string) => ({ name, match: { path: `/${name}` }, upstream: 'echo', policies: [name] });
  writeFileSync(
    file,
    stringify({
      listeners: [{ name: 'edge', address: '127.0.0.1:0' }],
      admin: { address: '127.0.0.1:0' },
      lifecycle: { watchConfig: false, drainTimeout: '1s' },
      redis: {
        url: redis.url,
        keyPrefix: KEY_PREFIX,
        commandTimeout: `${COMMAND_TIMEOUT_MS}ms`,
        reconnect: { initialDelay: '20ms', maxDelay: '200ms' },
      },
      policies: {
        shared: {
          kind: 'rate_limit',
          limitBy: 'none',
          limits: [{ points: N, duration: '60s' }],
          store: patientStore('insurance'),
        },
        insured: {
          kind: 'rate_limit',
          limitBy: 'none',
          limits: [{ points: INSURED, duration: '60s' }],
          store: patientStore('insurance'),
        },
        slow: {
          kind: 'rate_limit',
          limitBy: 'none',
          limits: [{ points: 1000, duration: '60s' }],
          store: redisStore('insurance'),
        },
        open: {
          kind: 'rate_limit',
          limitBy: 'none',
          limits: [{ points: 2, duration: '60s' }],
          store: patientStore('fail-open'),
        },
        closed: {
          kind: 'rate_limit',
          limitBy: 'none',
          limits: [{ points: 1000, duration: '60s' }],
          store: patientStore('fail-closed'),
        },
      },
      upstreams: { echo: { endpoints: [up.url] } },
      routes: [route('shared'), route('insured'), route('slow'), route('open'), route('closed')],
    }),
  );
  gws = await Promise.all([startGatewayProcess(file), startGatewayProcess(file)]);
}, 60_000);

afterAll(async () => {
  await Promise.all(gws.map((g) => g.stop()));
  await up?.close();
  await redis?.close();
});

interface Timed {
  status: number;
  ms: number;
  body: string;
  ratelimit: string | null;
}

async function send(gw: GatewayProcess, path: string): Promise<Timed> {
  const t0 = performance.now();
  const res = await fetch(`http://127.0.0.1:${gw.port}${path}`);
  const body = await res.text();
  return { status: res.status, ms: performance.now() - t0, body, ratelimit: res.headers.get('ratelimit') };
}

/** `n` requests, spread over both processes, all in flight at once. */
function burst(path: string, n: number): Promise<Timed[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => send(gws[i % 2]!, path)));
}

function count(results: Timed[], status: number): number {
  return results.filter((r) => r.status === status).length;
}

async function redisState(gw: GatewayProcess): Promise<string> {
  const body = (await (await fetch(`http://127.0.0.1:${gw.adminPort}/v1/ratelimits`)).json()) as {
    redis: { state: string } | null;
  };
  return body.redis?.state ?? 'none';
}

async function metric(gw: GatewayProcess, name: string, labels: Record<string, string>): Promise<number> {
  return metricValue(await scrape(`http://127.0.0.1:${gw.adminPort}`), name, labels) ?? 0;
}

describe('two gateway processes sharing Redis', () => {
  it('admit exactly N together, and every answer says how much of the shared budget is left', async () => {
    await until('both processes connected to Redis', async () =>
      (await Promise.all(gws.map(redisState))).every((s) => s === 'ready'),
    );
    const results = await burst('/shared', 3 * N);
    expect(count(results, 200)).toBe(N);
    expect(count(results, 429)).toBe(2 * N);
    // r counts down the shared budget: each of N..1 remaining once, whichever process answered.
    const remaining = results
      .filter((r) => r.status === 200)
      .map((r) => Number(/;r=(\d+);/.exec(r.ratelimit ?? '')?.[1]))
      .sort((a, b) => a - b);
    expect(remaining).toEqual(Array.from({ length: N }, (_, i) => i));
    // Counted where rate-limiter-flexible's RateLimiterRedis counts: <keyPrefix>rl:<policy>:<w>s:<key>.
    const keys = await redis.command('KEYS', `${KEY_PREFIX}rl:shared:60s:*`);
    expect(keys.startsWith('*1\r\n')).toBe(true);
    const key = /\r\n(rl-[^\r]+)\r\n/.exec(keys)![1]!;
    expect(await redis.command('GET', key)).toBe(`$${String(3 * N).length}\r\n${3 * N}\r\n`);
    // Each process decided its half through Redis (which of them got the admitted ones is a race).
    for (const gw of gws) {
      const calls = 'peregrine_ratelimit_store_duration_seconds_count';
      expect(await metric(gw, calls, { policy: 'shared', result: 'ok' })).toBe((3 * N) / 2);
      const decided = 'peregrine_ratelimit_decisions_total';
      const allowed = await metric(gw, decided, { policy: 'shared', outcome: 'allowed' });
      const limited = await metric(gw, decided, { policy: 'shared', outcome: 'limited' });
      expect(allowed + limited).toBe((3 * N) / 2);
    }
  });

  it('while Redis is down: insurance admits each process its share, fail-open admits, fail-closed answers 503; no 429 for the outage, no long wait', async () => {
    // Spend some of the insured budget in Redis first: it does not carry into the insurance.
    expect(count(await burst('/insured', 4), 200)).toBe(4);
    await redis.stop();
    await until('both processes saw Redis go', async () =>
      (await Promise.all(gws.map(redisState))).every((s) => s !== 'ready'),
    );

    const insured = await burst('/insured', INSURED + 6);
    // Each process admits INSURED / 2 on its own; what is over is a limit, not an outage.
    expect(count(insured, 200)).toBe(INSURED);
    expect(count(insured, 429)).toBe(6);
    for (const r of insured.filter((x) => x.status === 429))
      expect(JSON.parse(r.body).code).toBe('RATE_LIMITED');

    const open = await burst('/open', 10);
    expect(count(open, 200)).toBe(10);
    for (const r of open) expect(r.ratelimit).toBeNull();

    const closed = await burst('/closed', 4);
    expect(closed.map((r) => r.status)).toEqual([503, 503, 503, 503]);
    for (const r of closed)
      expect(JSON.parse(r.body)).toMatchObject({ code: 'RATE_LIMIT_UNAVAILABLE', policy: 'closed' });

    // Nothing waited for ioredis's 5 s timeout; a refused connection fails at once.
    for (const r of [...insured, ...open, ...closed]) expect(r.ms).toBeLessThan(1000);
    for (const gw of gws) {
      expect(
        await metric(gw, 'peregrine_ratelimit_decisions_total', { policy: 'insured', outcome: 'insured' }),
      ).toBe(INSURED / 2);
      expect(await metric(gw, 'peregrine_ratelimit_insurance_activations_total', { policy: 'insured' })).toBe(
        1,
      );
      expect(await metric(gw, 'peregrine_ratelimit_degraded', { policy: 'insured' })).toBe(1);
      expect(
        await metric(gw, 'peregrine_ratelimit_decisions_total', { policy: 'open', outcome: 'store_error' }),
      ).toBe(5);
      await until('the degradation logged', () =>
        gw.logs.some((l) => l.msg === 'rate limit store unavailable; deciding by insurance until it answers'),
      );
    }
  });

  it('Redis back: the shared limit holds again across both processes', async () => {
    await redis.start();
    await until('both processes reconnected', async () =>
      (await Promise.all(gws.map(redisState))).every((s) => s === 'ready'),
    );
    // A fresh Redis (no persistence): the shared policy's full budget, once, for both together.
    const results = await burst('/shared', N + 10);
    expect(count(results, 200)).toBe(N);
    expect(count(results, 429)).toBe(10);
    // The insured policy counts in Redis again (a fresh budget there) and leaves its degradation.
    expect(count(await burst('/insured', 2), 200)).toBe(2);
    for (const gw of gws) {
      expect(await metric(gw, 'peregrine_ratelimit_degraded', { policy: 'insured' })).toBe(0);
      // The line comes through the child's stdout, which can trail its answers.
      await until('the recovery logged', () =>
        gw.logs.some((l) => l.msg === 'rate limit store answering again'),
      );
    }
  });

  it('a frozen Redis (connected, silent) is waited for at most the policy timeout, then insurance decides', async () => {
    redis.pause();
    try {
      const results = await burst('/slow', 6);
      expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
      for (const r of results) expect(r.ms).toBeLessThan(1000);
    } finally {
      redis.resume();
    }
    for (const gw of gws) {
      const text = await scrape(`http://127.0.0.1:${gw.adminPort}`);
      const timeouts = metricValue(text, 'peregrine_ratelimit_store_duration_seconds_count', {
        policy: 'slow',
        result: 'timeout',
      });
      expect(timeouts).toBe(3);
      // The waits end at the 50 ms timeout: all within the 250 ms bucket even on a busy machine.
      expect(
        metricValue(text, 'peregrine_ratelimit_store_duration_seconds_bucket', {
          policy: 'slow',
          result: 'timeout',
          le: '0.25',
        }),
      ).toBe(3);
    }
  });
});
