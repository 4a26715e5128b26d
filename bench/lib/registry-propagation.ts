import { fleetAddress } from '../peers/heartbeats.ts';
import { intFromEnv } from './env.ts';
import { type Group, sleep } from './feature-bench.ts';
import { goal, info } from './goals.ts';
import { freePort } from './proc.ts';
import { startBenchRedis } from './redis.ts';
import { type ApiAnswer, RegistryCaller, watchRegistry } from './registry-api.ts';
import { type RegistryGateway, startRegistryGateway } from './registry-gateway.ts';
import type { BenchSession } from './session.ts';
import { type LatencySummary, summariseLatencies } from './stats.ts';
import { fmtInt, fmtMs, markdownTable } from './table.ts';

export const PROPAGATION_GOAL_MS = 1000;
const SERVICE = 'prop';
/** A change not seen at B within this long is lost. */
const LOST_AFTER_MS = 5000;

const CHANGES = ['registered', 'drained', 'deregistered'] as const;
type Change = (typeof CHANGES)[number];
const EXPECTED_STATUS: Record<Change, number> = { registered: 201, drained: 200, deregistered: 204 };

export interface PropagationResult {
  byChange: Record<Change | 'expired', LatencySummary | undefined>;
  all: LatencySummary | undefined;
  lost: number;
  apiFailures: string[];
}

/** Arrival times of changes on a watch stream, by `<cause>:<id>`, and waiting for one. */
class Arrivals {
  readonly #seen = new Map<string, number>();
  readonly #waiting = new Map<string, (at: number) => void>();

  record(key: string, at: number): void {
    this.#seen.set(key, at);
    this.#waiting.get(key)?.(at);
    this.#waiting.delete(key);
  }

  /** performance.now() when `key` arrived, or undefined after `timeoutMs`. */
  wait(key: string, timeoutMs: number): Promise<number | undefined> {
    const at = this.#seen.get(key);
    if (at !== undefined) return Promise.resolve(at);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(key);
        resolve(undefined);
      }, timeoutMs);
      this.#waiting.set(key, (t) => {
        clearTimeout(timer);
        resolve(t);
      });
    });
  }
}

function startReplica(
  s: BenchSession,
  name: string,
  redisUrl: string,
  port: number,
): Promise<RegistryGateway> {
  return startRegistryGateway(s.ctx, `propagation-${name}`, {
    port,
    store: 'redis',
    redisUrl,
    gatewayId: name,
    services: [SERVICE],
    upstreams: [SERVICE],
  });
}

async function measure(s: BenchSession): Promise<PropagationResult> {
  const cycles = intFromEnv('BENCH_PROP_CYCLES', 200);
  const expiries = intFromEnv('BENCH_PROP_EXPIRIES', 50, 0);
  const redis = await startBenchRedis('redis-propagation');
  const [portA, portB] = [await freePort(), await freePort()];
  const a = await startReplica(s, 'replica-a', redis.url, portA);
  const b = await startReplica(s, 'replica-b', redis.url, portB);
  const arrivals = new Arrivals();
  const watch = await watchRegistry(`http://127.0.0.1:${portB}`, SERVICE, (c, at) =>
    arrivals.record(`${c.cause}:${c.instance.id}`, at),
  );
  const caller = new RegistryCaller(`http://127.0.0.1:${portA}`);
  const samples: Record<Change | 'expired', number[]> = {
    registered: [],
    drained: [],
    deregistered: [],
    expired: [],
  };
  let lost = 0;
  const apiFailures: string[] = [];
  const failed = (what: string, ans: ApiAnswer) =>
    apiFailures.push(`${what}: ${ans.status} ${JSON.stringify(ans.json)?.slice(0, 200)}`);
  try {
    for (let c = 0; c < cycles; c++) {
      const id = `p-${c}`;
      for (const change of CHANGES) {
        const seen = arrivals.wait(`${change}:${id}`, LOST_AFTER_MS);
        const sent = performance.now();
        const ans =
          change === 'registered'
            ? await caller.register(SERVICE, id, { address: fleetAddress(c), port: 8080, ttl: '60s' })
            : change === 'drained'
              ? await caller.drain(SERVICE, id)
              : await caller.deregister(SERVICE, id);
        if (ans.status !== EXPECTED_STATUS[change]) {
          failed(`${change} ${id}`, ans);
          break;
        }
        const at = await seen;
        if (at === undefined) lost++;
        else samples[change].push(at - sent);
        // Not in step with the stores' sweep and the event loop's timers.
        await sleep(Math.random() * 20);
      }
    }
    const leases: { id: string; expiresAt: number }[] = [];
    for (let e = 0; e < expiries; e++) {
      const id = `x-${e}`;
      const ans = await caller.register(SERVICE, id, {
        address: fleetAddress(cycles + e),
        port: 8080,
        ttl: '1s',
      });
      const instance = ans.json?.instance as { expiresAt?: string } | undefined;
      if (ans.status !== 201 || !instance?.expiresAt) failed(`register ${id}`, ans);
      else leases.push({ id, expiresAt: Date.parse(instance.expiresAt) });
      await sleep(Math.random() * 40);
    }
    for (const lease of leases) {
      const wait = Math.max(0, lease.expiresAt - Date.now()) + LOST_AFTER_MS;
      const at = await arrivals.wait(`expired:${lease.id}`, wait);
      if (at === undefined) lost++;
      else samples.expired.push(performance.timeOrigin + at - lease.expiresAt);
    }
  } finally {
    watch.close();
    await caller.close();
    await Promise.all([a.proc.stop(5000), b.proc.stop(5000)]);
    await redis.proc.stop(2000);
  }
  return {
    byChange: {
      registered: summariseLatencies(samples.registered),
      drained: summariseLatencies(samples.drained),
      deregistered: summariseLatencies(samples.deregistered),
      expired: summariseLatencies(samples.expired),
    },
    all: summariseLatencies([...samples.registered, ...samples.drained, ...samples.deregistered]),
    lost,
    apiFailures,
  };
}

export const propagationGroup: Group = {
  id: 'propagation',
  title: 'Propagation between two replicas through Redis (changed at A, seen on B’s watch stream)',
  async run(s) {
    const r = await measure(s);
    const row = (name: string, l: LatencySummary | undefined) => [
      name,
      fmtInt(l?.count),
      fmtMs(l?.p50),
      fmtMs(l?.p99),
      fmtMs(l?.max),
    ];
    const table = markdownTable(
      ['change', 'samples', 'p50 ms', 'p99 ms', 'max ms'],
      [
        row('registered (PUT, new)', r.byChange.registered),
        row('drained (POST …/drain)', r.byChange.drained),
        row('deregistered (DELETE)', r.byChange.deregistered),
        row('all three', r.all),
        row('expired (1 s lease, from its expiry)', r.byChange.expired),
      ],
      ['left', 'right', 'right', 'right', 'right'],
    );
    const checks = [
      goal(
        'propagation A → B through Redis: register, drain, deregister, p99',
        r.all?.p99,
        '≤',
        PROPAGATION_GOAL_MS,
        'ms',
      ),
      goal(
        'propagation: expiry seen at B, p99 after the lease ended',
        r.byChange.expired?.p99,
        '≤',
        PROPAGATION_GOAL_MS,
        'ms',
      ),
      goal(`propagation: changes not seen at B within ${LOST_AFTER_MS / 1000} s`, r.lost, '=', 0, 'count'),
      info('propagation A → B: max', r.all?.max, 'ms'),
    ];
    const notes = [
      'Propagation: one change at a time, timed from sending it to A until it arrived on B’s watch stream (A’s own handling included), with a random 0-20 ms pause between changes; expiry from the lease’s `expiresAt` (Redis’s clock, the same host) to the event, which includes the sweep interval (250 ms).',
    ];
    if (r.apiFailures.length)
      notes.push(
        `Propagation: the registration API refused ${r.apiFailures.length} changes, e.g. ${r.apiFailures[0]}`,
      );
    return { body: table, checks, notes, data: r };
  },
};
