import { UPSTREAM_BODY } from '../peers/upstream.ts';
import { cpuWindow, machineCpuWindow } from './cpu.ts';
import { intFromEnv } from './env.ts';
import { type Group, log, perStoreGroup, sleep } from './feature-bench.ts';
import { goal, info } from './goals.ts';
import { type LoadResult, totalErrors } from './load.ts';
import { askPeer, freePort, httpGet, waitForHttp } from './proc.ts';
import { startBenchRedis } from './redis.ts';
import { RegistryCaller } from './registry-api.ts';
import { type RegistryGateway, startRegistryGateway } from './registry-gateway.ts';
import type { RegistryStoreKind } from './registry-heartbeats.ts';
import type { BenchSession } from './session.ts';
import { fmtInt, fmtNum, markdownTable } from './table.ts';
import { startPeer } from './targets.ts';

const SERVICE = 'churn';
const STEADY = 2;
const CHURN_POOL = 6;

export interface ChurnResult {
  store: RegistryStoreKind;
  load: LoadResult;
  failed: number;
  changes: number;
  changesPerS: number;
  /** Ticks that came late because the previous change took longer than the interval. */
  late: number;
  apiFailures: string[];
  /** Requests each endpoint port received during the whole run (warmup included). */
  steadyRequests: number;
  churnedRequests: number;
  /** Endpoints at the gateway after the churn that should not be there, or are missing. */
  finalMismatch: number;
  gatewayCpuPct: number;
  /** Processes not the bench's during the load (% of one core). */
  foreignPct?: number;
}

/** The next change: add when none churn, remove when all do, else either at random. */
export function churnStep(churning: number, pool: number, random: number): 'add' | 'remove' {
  if (churning <= 0) return 'add';
  if (churning >= pool) return 'remove';
  return random < 0.5 ? 'add' : 'remove';
}

/** The ports of the endpoints /v1/upstreams shows for `upstream`, leaving out draining ones. */
async function endpointPorts(admin: string, upstream: string): Promise<number[]> {
  const res = await httpGet(`${admin}/v1/upstreams`, 5000);
  const view = JSON.parse(res.body) as {
    upstreams: { name: string; endpoints: { id: string; state: string }[] }[];
  };
  const u = view.upstreams.find((x) => x.name === upstream);
  return (u?.endpoints ?? [])
    .filter((e) => e.state !== 'draining')
    .map((e) => Number(/:(\d+)\/?$/.exec(e.id)?.[1]))
    .sort((x, y) => x - y);
}

async function measureStore(s: BenchSession, store: RegistryStoreKind): Promise<ChurnResult> {
  const { ctx, settings, loadgen } = s;
  const durationS = intFromEnv('BENCH_CHURN_DURATION', 15);
  const intervalMs = intFromEnv('BENCH_CHURN_INTERVAL_MS', 100);
  const ports = await Promise.all(Array.from({ length: STEADY + CHURN_POOL }, () => freePort()));
  const steadyPorts = ports.slice(0, STEADY);
  const poolPorts = ports.slice(STEADY);
  const upstream = await startPeer(ctx, 'upstream.ts', { MORE_PORTS: ports.join(',') });
  const redis = store === 'redis' ? await startBenchRedis('redis-churn') : undefined;
  const registryPort = await freePort();
  let gw: RegistryGateway | undefined;
  const caller = new RegistryCaller(`http://127.0.0.1:${registryPort}`);
  try {
    for (const p of ports) await waitForHttp(`http://127.0.0.1:${p}/`, { proc: upstream.proc });
    gw = await startRegistryGateway(ctx, `churn-${store}`, {
      port: registryPort,
      store,
      redisUrl: redis?.url,
      services: [SERVICE],
      upstreams: [SERVICE],
      allowLoopback: true,
      rateLimit: { perSecond: 100_000, burst: 100_000 },
    });
    const register = (id: string, port: number) =>
      caller.register(SERVICE, id, { address: '127.0.0.1', port, ttl: '5m' });
    for (const [i, port] of steadyPorts.entries()) {
      const ans = await register(`steady-${i}`, port);
      if (ans.status !== 201)
        throw new Error(`registering steady-${i}: ${ans.status} ${JSON.stringify(ans.json)}`);
    }
    const url = `${gw.url}${SERVICE}`;
    const first = await waitForHttp(url, { proc: gw.proc });
    if (first.body !== UPSTREAM_BODY.toString())
      throw new Error(`${url} answered 200 but not the upstream's body`);
    if (settings.warmupS > 0)
      await loadgen.run(url, {
        durationS: settings.warmupS,
        connections: settings.connections,
        threads: settings.threads,
      });

    const churning = new Map<string, number>();
    const apiFailures: string[] = [];
    let changes = 0;
    let late = 0;
    let seq = 0;
    let running = true;
    const change = async () => {
      if (churnStep(churning.size, CHURN_POOL, Math.random()) === 'add') {
        const used = new Set(churning.values());
        const free = poolPorts.filter((p) => !used.has(p));
        const port = free[Math.floor(Math.random() * free.length)]!;
        const id = `churn-${seq++}`;
        const ans = await register(id, port);
        if (ans.status === 201) churning.set(id, port);
        else apiFailures.push(`register ${id}: ${ans.status}`);
      } else {
        const ids = [...churning.keys()];
        const id = ids[Math.floor(Math.random() * ids.length)]!;
        const ans = await caller.deregister(SERVICE, id);
        if (ans.status === 204) churning.delete(id);
        else apiFailures.push(`deregister ${id}: ${ans.status}`);
      }
      changes++;
    };
    const gwCpu = cpuWindow(gw.proc.pid);
    const pids = [gw.proc.pid, upstream.proc.pid, ctx.upstream.proc.pid, ctx.otlp.proc.pid, redis?.proc.pid];
    const machine = machineCpuWindow(() => pids.filter((p): p is number => p !== undefined));
    const t0 = performance.now();
    const churn = (async () => {
      let next = t0;
      while (running) {
        await change();
        next += intervalMs;
        const wait = next - performance.now();
        if (wait > 0) await sleep(wait);
        else late++;
      }
    })();
    log(`churn (${store}): ${durationS} s of load with a change every ${intervalMs} ms`);
    let load: LoadResult;
    try {
      load = await loadgen.run(url, {
        durationS,
        connections: settings.connections,
        threads: settings.threads,
      });
    } finally {
      running = false;
      await churn;
    }
    const elapsedS = (performance.now() - t0) / 1000;
    const cpu = gwCpu();
    const foreignPct = machine()?.foreignPct;

    const expected = [...steadyPorts, ...churning.values()].sort((x, y) => x - y);
    let finalMismatch = Number.NaN;
    for (const deadline = Date.now() + 3000; ; ) {
      const actual = await endpointPorts(gw.admin, SERVICE);
      finalMismatch =
        actual.filter((p) => !expected.includes(p)).length +
        expected.filter((p) => !actual.includes(p)).length;
      if (finalMismatch === 0 || Date.now() > deadline) break;
      await sleep(100);
    }
    const { counts } = await askPeer<{ counts: Record<string, number> }>(upstream.proc, 'counts');
    const sum = (ps: number[]) => ps.reduce((a, p) => a + (counts[String(p)] ?? 0), 0);
    return {
      store,
      load,
      failed: totalErrors(load),
      changes,
      changesPerS: changes / elapsedS,
      late,
      apiFailures,
      steadyRequests: sum(steadyPorts),
      churnedRequests: sum(poolPorts),
      finalMismatch,
      gatewayCpuPct: cpu?.pctOfCore ?? Number.NaN,
      ...(foreignPct === undefined ? {} : { foreignPct }),
    };
  } finally {
    await caller.close();
    await gw?.proc.stop(5000);
    await upstream.proc.stop(2000);
    await redis?.proc.stop(2000);
  }
}

export function churnGroup(stores: readonly RegistryStoreKind[]): Group {
  return perStoreGroup(
    'churn',
    'Endpoint churn under load (one registration or deregistration every 100 ms)',
    stores,
    measureStore,
    (results: ChurnResult[]) => {
      const rows = results.map((r) => [
        r.store,
        fmtInt(r.load.rps),
        fmtInt(r.load.requests),
        fmtInt(r.failed),
        `${fmtInt(r.changes)} (${fmtNum(r.changesPerS, 1)}/s${r.late ? `, ${r.late} late` : ''})`,
        fmtInt(r.apiFailures.length),
        `${fmtInt(r.churnedRequests)} / ${fmtInt(r.steadyRequests)}`,
        Number.isNaN(r.finalMismatch)
          ? 'n/a'
          : r.finalMismatch === 0
            ? 'as registered'
            : `${r.finalMismatch} off`,
        `${fmtNum(r.gatewayCpuPct, 0)}%`,
        `${fmtNum(r.foreignPct, 0)}%`,
      ]);
      const table = markdownTable(
        [
          'store',
          'req/s',
          'requests',
          'failed',
          'changes',
          'API refusals',
          'requests to churned / steady endpoints',
          'endpoints after',
          'gateway CPU',
          'other processes',
        ],
        rows,
        ['left', ...Array(9).fill('right')],
      );
      const checks = results.flatMap((r) => [
        goal(`churn under load, ${r.store} store: failed requests`, r.failed, '=', 0, 'count'),
        info(`churn, ${r.store} store: endpoint changes per second`, r.changesPerS, 'ratio'),
      ]);
      const notes = results
        .filter((r) => r.failed > 0 || r.apiFailures.length > 0)
        .map(
          (r) =>
            `churn (${r.store}): socket errors ${JSON.stringify(r.load.errors)}, ≥400 responses ${r.load.non2xx3xx}` +
            `${r.apiFailures.length ? `; API refusals, e.g. ${r.apiFailures.slice(0, 3).join('; ')}` : ''}.`,
        );
      notes.push(
        `Churn: ${STEADY} steady instances and up to ${CHURN_POOL} more on other ports of one upstream process; each change waits for the previous one's answer (a late tick means a change took longer than the interval). ` +
          '“endpoints after”: the gateway’s /v1/upstreams against what the bench left registered, within 3 s of the end.',
      );
      return { body: table, checks, notes, data: results };
    },
  );
}
