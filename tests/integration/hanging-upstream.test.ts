/**
 * An upstream that accepts requests and never answers: every request must end in a 504 at its
 * timeout, and nothing may stay behind once they have (timers, sockets, memory, in-flight counts).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { until } from '../helpers/until.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let up: TestUpstream;
let gw: TestGateway;

beforeAll(async () => {
  up = await startUpstream();
  gw = await startGateway({
    upstreams: {
      stuck: {
        endpoints: [up.url],
        // The response timeout runs from dispatch, connect included: generous enough that a
        // wave of 100 new connections reaches the upstream before it fires on a loaded machine.
        timeouts: { response: '500ms', request: '2s' },
        retries: { maxAttempts: 1 },
        // The breaker would start refusing after a run of timeouts; this test wants every
        // request to reach the upstream and time out there.
        circuitBreaker: { enabled: false },
        outlierDetection: { enabled: false },
      },
    },
    routes: [{ name: 'stuck', match: { path: '/' }, upstream: 'stuck' }],
    telemetry: { accessLog: { enabled: false } },
  });
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
});

/** Active resources of this process by type (timers, TCP handles, ...). */
function resources(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of process.getActiveResourcesInfo()) counts.set(r, (counts.get(r) ?? 0) + 1);
  return counts;
}

async function inFlight(): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const m = /^peregrine_requests_in_flight(?:\{[^}]*\})? (\d+)/m.exec(text);
  if (!m) throw new Error('no in-flight gauge');
  return Number(m[1]);
}

describe('a hanging upstream', () => {
  it('times every request out with 504 and keeps no timer, socket or memory for them', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const WARMUP_WAVES = 4;
    const WAVES = 10;
    // Fewer at once than the pool's 128 connections per endpoint, so every request reaches the
    // upstream rather than timing out in the pool's queue.
    const PER_WAVE = 100;

    const client = new Agent({ connections: PER_WAVE, pipelining: 0 });
    const wave = async (): Promise<number[]> =>
      Promise.all(
        Array.from({ length: PER_WAVE }, async (_, i) => {
          const res = await request(`${gw.url}/hang?${i}`, { dispatcher: client, reset: true });
          await res.body.dump();
          return res.statusCode;
        }),
      );
    // Nothing in flight, sockets given a moment to close, garbage collected: what is left.
    const settled = async (): Promise<{ heap: number; resources: Map<string, number> }> => {
      await until('nothing in flight', async () => (await inFlight()) === 0);
      await new Promise((resolve) => setTimeout(resolve, 50));
      gc();
      return { heap: process.memoryUsage().heapUsed, resources: resources() };
    };
    // Each wave: all 504; every request reached the upstream and the gateway gave each one up.
    // The upstream's record of them is dropped after each wave: it lives in this process too.
    const runWave = async (): Promise<void> => {
      expect(new Set(await wave())).toEqual(new Set([504]));
      expect(up.requests).toHaveLength(PER_WAVE);
      await until('every upstream request to be cancelled', () => up.abortedCount() === PER_WAVE);
      up.requests.length = 0;
    };
    // Warm-up waves first: compiled code, inline caches, pools and metric series grow the heap by
    // about 0.6 MB over the first few hundred requests and then stay level.
    for (let w = 0; w < WARMUP_WAVES; w++) await runWave();
    const { heap: heapBefore, resources: before } = await settled();

    for (let w = 0; w < WAVES; w++) await runWave();
    const { heap: heapAfter, resources: after } = await settled();

    // Timers that keep the process alive: none left per request.
    expect(after.get('Timeout') ?? 0).toBeLessThanOrEqual(before.get('Timeout') ?? 0);
    // Sockets: the test client's connections close with each response (reset: true), and the
    // gateway closed each upstream connection it gave up on; a few may still be closing.
    expect(after.get('TCPSocketWrap') ?? 0).toBeLessThanOrEqual((before.get('TCPSocketWrap') ?? 0) + 5);
    // Memory: a request kept alive by a forgotten timer or listener holds its context, request and
    // response objects (several kB); the level heap moves by a few hundred kB between waves.
    expect((heapAfter - heapBefore) / (WAVES * PER_WAVE)).toBeLessThan(1024);

    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    const timeouts = new RegExp(
      `peregrine_upstream_attempts_total\\{[^}]*outcome="timeout"[^}]*\\} ${(WARMUP_WAVES + WAVES) * PER_WAVE}\n`,
    );
    expect(metrics).toMatch(timeouts);
    await client.close();
  });
});
