import type { FleetStats } from '../peers/heartbeats.ts';
import { cpuWindow, machineCpuWindow, waitForQuiet } from './cpu.ts';
import { intFromEnv } from './env.ts';
import { type Group, log, perStoreGroup, sleep } from './feature-bench.ts';
import { goal, info } from './goals.ts';
import { launcherGcFlags } from './launcher.ts';
import { FOREIGN_PCT } from './measure.ts';
import { pinTarget } from './pin.ts';
import { askPeer, freePort, type Managed, waitForHttp } from './proc.ts';
import { metricSum, scrapeMetrics } from './prom.ts';
import { startBenchRedis } from './redis.ts';
import { benchRegistryToken, REGISTRY_TOKEN_ENV } from './registry-config.ts';
import { startRegistryGateway } from './registry-gateway.ts';
import { treeRssKiB } from './rss.ts';
import type { BenchSession } from './session.ts';
import { establishedConnections } from './sockets.ts';
import { fmtInt, fmtNum, markdownTable } from './table.ts';
import { startPeer } from './targets.ts';

export type RegistryStoreKind = 'memory' | 'redis';
/** What a heartbeats row measures: the gateway with a store, or the floor (bench/peers/heartbeat-floor.ts). */
export type HeartbeatTarget = RegistryStoreKind | 'floor';

/** Issue 14: 1,000 instances renewing every 5 s cost the gateway at most this (% of one core). */
export const HEARTBEAT_CPU_GOAL_PCT = 5;
const TTL_MS = 15_000;
const RAMP_MS = 5000;

export interface HeartbeatResult {
  store: HeartbeatTarget;
  instances: number;
  services: number;
  windowS: number;
  gatewayPct: number;
  idlePct: number;
  /** Renewals the gateway counted in the window, and how many 5 s renewals would be. */
  renewals: number;
  expectedRenewals: number;
  /** Client-side failures and re-registrations in the window. */
  failures: number;
  reregistered: number;
  failureSamples: readonly string[];
  instancesSeen: number;
  /** Connections open to the registration API at the end of the window. */
  connections?: number;
  redisPct?: number;
  fleetPct: number;
  rssMB: number;
  foreignPct?: number;
}

function settings() {
  return {
    instances: intFromEnv('BENCH_HB_INSTANCES', 1000),
    services: intFromEnv('BENCH_HB_SERVICES', 10),
    windowS: intFromEnv('BENCH_HB_WINDOW', 60),
    idleS: intFromEnv('BENCH_HB_IDLE', 5),
    /** Empty: Peregrine's default (65s, longer than the renewal interval). */
    keepAlive: process.env.BENCH_HB_KEEPALIVE ?? '',
    /** 0: leave out the floor row (a bare node:http server answering the same fleet). */
    floor: process.env.BENCH_HB_FLOOR !== '0',
  };
}

async function fleetStats(fleet: Managed): Promise<FleetStats> {
  return askPeer<FleetStats>(fleet, 'stats', 2000);
}

interface HeartbeatServer {
  proc: Managed;
  /** The registration API's origin. */
  registry: string;
  port: number;
  /** The admin origin (the gateway's metrics); none for the floor. */
  admin?: string;
  redis?: Managed;
}

/** The gateway with its store, or the floor: the same fleet's requests answered by bare node:http. */
async function startServer(s: BenchSession, store: HeartbeatTarget): Promise<HeartbeatServer> {
  const { ctx } = s;
  const hb = settings();
  if (store === 'floor') {
    const peer = await startPeer(ctx, 'heartbeat-floor.ts', {}, launcherGcFlags(ctx.peregrineDir));
    await waitForHttp(`${peer.origin}/`, { proc: peer.proc });
    if (ctx.pin) pinTarget(ctx.pin, peer.proc.pid);
    return { proc: peer.proc, registry: peer.origin, port: peer.port };
  }
  const redis = store === 'redis' ? await startBenchRedis('redis-heartbeats') : undefined;
  const registryPort = await freePort();
  const services = Array.from({ length: hb.services }, (_, k) => `hb-${k}`);
  const gw = await startRegistryGateway(ctx, `heartbeats-${store}`, {
    port: registryPort,
    store,
    redisUrl: redis?.url,
    services: ['hb-*'],
    upstreams: services,
    ...(hb.keepAlive ? { keepAliveTimeout: hb.keepAlive } : {}),
    // Sized for the fleet, as docs/registry.md says to: 1,000 instances renew 200 times a second.
    rateLimit: { perSecond: 100_000, burst: 100_000 },
    maxInstancesPerService: hb.instances,
  });
  return { proc: gw.proc, registry: gw.registry, port: registryPort, admin: gw.admin, redis: redis?.proc };
}

async function measureStore(s: BenchSession, store: HeartbeatTarget): Promise<HeartbeatResult> {
  const { ctx, settings: bench } = s;
  const hb = settings();
  const gw = await startServer(s, store);
  const redis = gw.redis === undefined ? undefined : { proc: gw.redis };
  const registryPort = gw.port;
  let fleet: Managed | undefined;
  try {
    const ours = () =>
      [ctx.upstream.proc.pid, ctx.otlp.proc.pid, gw.proc.pid, redis?.proc.pid, fleet?.pid].filter(
        (p): p is number => p !== undefined,
      );
    await waitForQuiet(ours, FOREIGN_PCT, bench.quietWaitS * 1000);
    const idle = cpuWindow(gw.proc.pid);
    await sleep(hb.idleS * 1000);
    const idlePct = idle()?.pctOfCore ?? Number.NaN;

    const started = await startPeer(ctx, 'heartbeats.ts', {
      REGISTRY: gw.registry,
      INSTANCES: String(hb.instances),
      SERVICES: String(hb.services),
      TTL_MS: String(TTL_MS),
      RAMP_MS: String(RAMP_MS),
      [REGISTRY_TOKEN_ENV]: benchRegistryToken(),
    });
    fleet = started.proc;
    const deadline = Date.now() + RAMP_MS + 60_000;
    for (;;) {
      const st = await fleetStats(fleet).catch(() => undefined);
      if (st && st.started === hb.instances) break;
      if (!fleet.running || Date.now() > deadline)
        throw new Error(`the fleet did not register (${JSON.stringify(st)}):\n${fleet.output()}`);
      await sleep(500);
    }
    log(`heartbeats (${store}): ${hb.instances} instances registered; measuring ${hb.windowS} s`);
    // One renewal interval, so renewals are spread as they will stay.
    await sleep(TTL_MS / 3);
    const before = gw.admin === undefined ? undefined : await scrapeMetrics(gw.admin);
    const f0 = await fleetStats(fleet);
    const gwCpu = cpuWindow(gw.proc.pid);
    const fleetCpu = cpuWindow(fleet.pid);
    const redisCpu = redis ? cpuWindow(redis.proc.pid) : undefined;
    const machine = machineCpuWindow(ours);
    await sleep(hb.windowS * 1000);
    const g = gwCpu();
    const f = fleetCpu();
    const r = redisCpu?.();
    const m = machine();
    const connections = establishedConnections(registryPort);
    const f1 = await fleetStats(fleet);
    const after = gw.admin === undefined ? undefined : await scrapeMetrics(gw.admin);
    if (!g) throw new Error(`the gateway exited:\n${gw.proc.output()}`);
    return {
      store,
      instances: hb.instances,
      services: hb.services,
      windowS: hb.windowS,
      gatewayPct: g.pctOfCore,
      idlePct,
      renewals:
        after === undefined || before === undefined
          ? Number.NaN
          : metricSum(after, 'peregrine_registry_renewals_total') -
            metricSum(before, 'peregrine_registry_renewals_total'),
      expectedRenewals: (hb.instances * hb.windowS * 1000) / (TTL_MS / 3),
      failures: f1.failures - f0.failures,
      reregistered: f1.reregistered - f0.reregistered,
      failureSamples: f1.failureSamples,
      instancesSeen: after === undefined ? Number.NaN : metricSum(after, 'peregrine_registry_instances'),
      ...(connections === undefined ? {} : { connections }),
      ...(r ? { redisPct: r.pctOfCore } : {}),
      fleetPct: f?.pctOfCore ?? Number.NaN,
      rssMB: (treeRssKiB(gw.proc.pid) ?? 0) / 1024,
      ...(m ? { foreignPct: m.foreignPct } : {}),
    };
  } finally {
    await fleet?.stop(2000);
    await gw.proc.stop(5000);
    await redis?.proc.stop(2000);
  }
}

/** The table's name for a row. */
function rowName(store: HeartbeatTarget): string {
  return store === 'floor' ? 'floor: bare node:http' : store;
}

export function heartbeatsGroup(stores: readonly RegistryStoreKind[]): Group {
  // The floor last, in the same run: what a Node server answering the same fleet costs on this
  // machine now, for the gateway's figures to be read against.
  const targets: HeartbeatTarget[] = settings().floor ? [...stores, 'floor'] : [...stores];
  return perStoreGroup(
    'heartbeats',
    'Heartbeats: what a fleet renewing its leases costs the gateway',
    targets,
    measureStore,
    (results: HeartbeatResult[]) => {
      const hb = settings();
      const floor = results.find((r) => r.store === 'floor');
      const rows = results.map((r) => [
        rowName(r.store),
        `${fmtInt(r.instances)} / ${r.services}`,
        `${fmtNum(r.gatewayPct, 2)}%`,
        `${fmtNum(r.idlePct, 2)}%`,
        `${fmtInt(r.renewals)} (${fmtInt(r.expectedRenewals)})`,
        `${fmtInt(r.failures)} / ${fmtInt(r.reregistered)}`,
        fmtInt(r.instancesSeen),
        fmtInt(r.connections),
        r.redisPct === undefined ? '' : `${fmtNum(r.redisPct, 2)}%`,
        `${fmtNum(r.fleetPct, 1)}%`,
        fmtNum(r.rssMB, 1),
        `${fmtNum(r.foreignPct, 0)}%`,
      ]);
      const table = markdownTable(
        [
          'store',
          'instances / services',
          `gateway CPU over ${hb.windowS} s`,
          'gateway CPU idle',
          'renewals counted (at 5 s)',
          'client failures / re-registrations',
          'instances at the gateway',
          'connections open',
          'Redis CPU',
          'fleet process CPU',
          'gateway RSS MB',
          'other processes',
        ],
        rows,
        ['left', ...Array(11).fill('right')],
      );
      const checks = results.flatMap((r) => {
        if (r.store === 'floor')
          return [
            info(
              'heartbeats, floor (bare node:http answering the same fleet): CPU (% of one core)',
              r.gatewayPct,
              '%',
            ),
          ];
        return [
          goal(
            `${fmtInt(r.instances)} instances renewing every 5 s, ${r.store} store: gateway CPU (% of one core)`,
            r.gatewayPct,
            '≤',
            HEARTBEAT_CPU_GOAL_PCT,
            '%',
          ),
          goal(`heartbeats, ${r.store} store: client failures in the window`, r.failures, '=', 0, 'count'),
          info(
            `heartbeats, ${r.store} store: renewals the gateway counted / one per instance every 5 s`,
            r.renewals / r.expectedRenewals,
            'ratio',
          ),
          ...(floor
            ? [
                info(
                  `heartbeats, ${r.store} store: gateway CPU / the floor's`,
                  r.gatewayPct / floor.gatewayPct,
                  'ratio',
                ),
              ]
            : []),
        ];
      });
      const notes = results
        .filter((r) => r.failures > 0)
        .map((r) => `heartbeats (${r.store}): failures, e.g. ${r.failureSamples.join('; ')}`);
      notes.push(
        `Heartbeats: each instance is Peregrine's RegistrationClient (TTL ${TTL_MS / 1000} s, renewing every third of it ±10%) with a keep-alive connection of its own, all in one process; ` +
          `the registration listener's keepAliveTimeout is ${hb.keepAlive || "Peregrine's default (65s)"} (BENCH_HB_KEEPALIVE; at or below the 5 s renewal interval, many connections close between renewals and are opened again). ` +
          'The token is rate-bounded at 100,000/s so the bound never refuses the fleet. Instances are 10.x.y.1:8080, never connected to (no traffic, no health checks). ' +
          "The floor row (BENCH_HB_FLOOR=0 leaves it out) is the same fleet answered by a bare node:http server as the registration API answers it (bench/peers/heartbeat-floor.ts: 204 to a renewal, no routing, credentials, store, metrics or tracing), with the launcher's GC flags, pinned like the gateway: its CPU is what any Node server pays for these requests on this machine in this run. " +
          "The fleet talks to the gateway over loopback, where a socket write also does the receiving side's TCP work in the writer's time, which a real network would not charge the gateway (in a CPU profile of this group, writes were half the gateway's main-thread time).",
      );
      return { body: table, checks, notes, data: results };
    },
  );
}
