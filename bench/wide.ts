/**
 * `npm run bench:wide`: what an upstream of many endpoints costs the gateway. One process serves
 * the upstream on N loopback addresses (bench/peers/wide-upstream.ts: 127.0.0.1, 127.0.0.2, ...).
 *
 * - Load, side by side (bench/side-by-side.ts's method): gateway A with an upstream of one endpoint
 *   (127.0.0.1) and gateway B with an upstream of all N, both on the last CPU at once, each loaded
 *   by its own wrk; B/A is the ratio of their CPU time per request, and A/B the throughput B keeps
 *   of A's when the CPU is the limit. Also the connections each holds to the upstream after the load.
 * - Health checks: three idle gateways with the N endpoints, without checks, with `healthCheck` at
 *   its default interval and at 1 s; their CPU over BENCH_WIDE_HEALTH_SECONDS (60), after 10 s to
 *   settle, above the one without checks, as % of a core; and the connections each holds.
 *
 * Issue 19's goals are marked PASS/MISS: N endpoints ≥ 0.9× one endpoint; checks ≤ 2% of a core at
 * the default interval. Run it on a quiet machine; the ratios hold better than absolute numbers.
 *
 *   node bench/wide.ts [--rounds N] [--b-dir DIR] [--skip-load] [--skip-health]
 *   BENCH_WIDE_ENDPOINTS (1000), BENCH_WIDE_HEALTH_SECONDS (60), BENCH_DURATION (10),
 *   BENCH_WARMUP (3), BENCH_CONNECTIONS (25 per gateway)
 *
 * `--b-dir` runs gateway B and the health-check gateways from another checkout (e.g. a
 * `git worktree` of the commit before), to see a change's effect; A stays this one.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { takeFlag, takeSwitch } from './lib/args.ts';
import { cpuMs } from './lib/cpu.ts';
import { intFromEnv } from './lib/env.ts';
import { peregrineConfig } from './lib/peregrine-config.ts';
import { type PinPlan, pinPlan, pinSelf, pinTarget } from './lib/pin.ts';
import { findExecutable, installCleanup, type Managed, runMain, stopAll } from './lib/proc.ts';
import { median, sideBySideRound } from './lib/side-by-side-round.ts';
import { fileStamp, fmtInt, fmtNum, markdownTable } from './lib/table.ts';
import { startPeregrine } from './lib/targets.ts';
import { connectionsTo, startWideUpstream, type WideUpstream } from './lib/wide.ts';

const ROOT = join(import.meta.dirname, '..');
const log = (s: string) => process.stderr.write(`${s}\n`);

/** Issue 19's goals for wide upstreams. */
export const WIDE_GOALS = { throughput: 0.9, healthCorePct: 2 } as const;

export interface WideGateway {
  name: string;
  dir: string;
  endpoints: readonly string[];
  upstream?: Record<string, unknown>;
}

/** The gateway config: the bench's passthrough profile with these endpoints (and upstream settings). */
export function wideConfigYaml(g: WideGateway, listenPort: number, adminPort: number): string {
  const cfg = peregrineConfig({
    profile: 'passthrough',
    listenPort,
    adminPort,
    upstreamOrigin: g.endpoints[0]!,
    endpoints: g.endpoints,
    upstream: g.upstream,
  });
  // Quiet logs: one line per endpoint-set change or health change is not what is measured.
  cfg.telemetry!.logLevel = 'warn';
  return stringify(cfg);
}

async function start(g: WideGateway, tmp: string, pin: PinPlan): Promise<{ proc: Managed; url: string }> {
  const started = await startPeregrine({
    name: `peregrine-${g.name}`,
    dir: g.dir,
    configFile: join(tmp, `${g.name}.yaml`),
    yaml: (listenPort, adminPort) => wideConfigYaml(g, listenPort, adminPort),
  });
  pinTarget(pin, started.proc.pid);
  return started;
}

interface LoadRound {
  usOne: number;
  usWide: number;
  rpsOne: number;
  rpsWide: number;
  connectionsOne: number;
  connectionsWide: number;
}

async function loadRounds(
  up: WideUpstream,
  wideDir: string,
  rounds: number,
  tmp: string,
  pin: PinPlan,
): Promise<LoadRound[]> {
  const wrk = findExecutable('wrk', ['/usr/local/bin', '/usr/bin']);
  if (!wrk) throw new Error('bench:wide needs wrk (apt-get install wrk)');
  const opts = {
    durationS: intFromEnv('BENCH_DURATION', 10),
    warmupS: intFromEnv('BENCH_WARMUP', 3, 0),
    connections: intFromEnv('BENCH_CONNECTIONS', 25),
  };
  const out: LoadRound[] = [];
  for (let round = 1; round <= rounds; round++) {
    const one = await start({ name: 'one', dir: ROOT, endpoints: [up.origin] }, tmp, pin);
    const wide = await start({ name: 'wide', dir: wideDir, endpoints: up.origins }, tmp, pin);
    const r = await sideBySideRound(wrk, one, wide, opts);
    const row: LoadRound = {
      usOne: r.usA,
      usWide: r.usB,
      rpsOne: r.a.rps,
      rpsWide: r.b.rps,
      connectionsOne: connectionsTo(one.proc.pid, up.port),
      connectionsWide: connectionsTo(wide.proc.pid, up.port),
    };
    out.push(row);
    log(
      `round ${round}: one endpoint ${fmtNum(row.usOne, 1)} µs/req, ${up.origins.length} endpoints ` +
        `${fmtNum(row.usWide, 1)} µs/req (×${fmtNum(row.usOne / row.usWide, 3)} throughput); ` +
        `connections ${row.connectionsOne} / ${row.connectionsWide}`,
    );
    await Promise.all([one.proc.stop(), wide.proc.stop()]);
  }
  return out;
}

interface HealthRow {
  name: string;
  cpuMs: number;
  /** CPU above the gateway without checks, % of one core. */
  corePct: number;
  connections: number;
}

async function healthCost(
  up: WideUpstream,
  dir: string,
  seconds: number,
  tmp: string,
  pin: PinPlan,
): Promise<HealthRow[]> {
  const kinds: WideGateway[] = [
    { name: 'no-checks', dir, endpoints: up.origins },
    { name: 'checks-default', dir, endpoints: up.origins, upstream: { healthCheck: { path: '/healthz' } } },
    {
      name: 'checks-1s',
      dir,
      endpoints: up.origins,
      upstream: { healthCheck: { path: '/healthz', interval: '1s' } },
    },
  ];
  const gateways: { proc: Managed; url: string }[] = [];
  for (const k of kinds) gateways.push(await start(k, tmp, pin));
  log(
    `health checks: ${kinds.length} idle gateways with ${up.origins.length} endpoints; 10 s to settle, then ${seconds} s`,
  );
  await new Promise((r) => setTimeout(r, 10_000));
  const before = gateways.map((g) => cpuMs(g.proc.pid));
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const wallMs = performance.now() - t0;
  const after = gateways.map((g) => cpuMs(g.proc.pid));
  if (before.includes(undefined) || after.includes(undefined)) throw new Error('a gateway exited');
  const used = after.map((a, i) => a! - before[i]!);
  const rows = kinds.map((k, i) => ({
    name: k.name,
    cpuMs: used[i]!,
    corePct: ((used[i]! - used[0]!) / wallMs) * 100,
    connections: connectionsTo(gateways[i]!.proc.pid, up.port),
  }));
  await Promise.all(gateways.map((g) => g.proc.stop()));
  return rows;
}

function report(
  n: number,
  load: readonly LoadRound[],
  health: readonly HealthRow[],
  wideDir: string,
): string {
  const lines = [`## Wide upstream: ${n} endpoints, ${new Date().toISOString()}`, ''];
  if (wideDir !== ROOT) lines.push(`The ${n}-endpoint gateways run from ${wideDir}.`, '');
  if (load.length > 0) {
    const throughput = median(load.map((r) => r.usOne / r.usWide));
    lines.push(
      `Side by side on one CPU, ${load.length} round(s): CPU µs per request (absolute values inflated: two gateways share the core).`,
      '',
      markdownTable(
        ['round', 'one endpoint µs/req', `${n} endpoints µs/req`, 'throughput ×', 'connections (one / wide)'],
        load.map((r, i) => [
          String(i + 1),
          fmtNum(r.usOne, 1),
          fmtNum(r.usWide, 1),
          fmtNum(r.usOne / r.usWide, 3),
          `${fmtInt(r.connectionsOne)} / ${fmtInt(r.connectionsWide)}`,
        ]),
        ['left', 'right', 'right', 'right', 'right'],
      ),
      '',
      `- ${n} endpoints ≥ ${WIDE_GOALS.throughput}× one endpoint: median ${fmtNum(throughput, 3)} ` +
        `**${throughput >= WIDE_GOALS.throughput ? 'PASS' : 'MISS'}**`,
      '',
    );
  }
  if (health.length > 0) {
    const dflt = health.find((h) => h.name === 'checks-default')!;
    lines.push(
      'Health checks, idle gateways: CPU above the gateway without checks, and connections held to the upstream.',
      '',
      markdownTable(
        ['gateway', 'CPU ms', '% of a core', 'connections'],
        health.map((h) => [
          h.name,
          fmtInt(h.cpuMs),
          h.name === 'no-checks' ? '—' : fmtNum(h.corePct, 2),
          fmtInt(h.connections),
        ]),
        ['left', 'right', 'right', 'right'],
      ),
      '',
      `- checks at ${n} endpoints ≤ ${WIDE_GOALS.healthCorePct}% of a core at the default interval: ${fmtNum(dflt.corePct, 2)}% ` +
        `**${dflt.corePct <= WIDE_GOALS.healthCorePct ? 'PASS' : 'MISS'}**`,
      '',
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  installCleanup(log);
  const args = process.argv.slice(2);
  const bDir = takeFlag(args, '--b-dir');
  const rounds = Number(takeFlag(args, '--rounds') ?? 3);
  const skipLoad = takeSwitch(args, '--skip-load');
  const skipHealth = takeSwitch(args, '--skip-health');
  if (args.length > 0 || !(rounds >= 1)) {
    throw new Error('usage: node bench/wide.ts [--rounds N] [--b-dir DIR] [--skip-load] [--skip-health]');
  }
  const n = intFromEnv('BENCH_WIDE_ENDPOINTS', 1000, 2);
  const seconds = intFromEnv('BENCH_WIDE_HEALTH_SECONDS', 60);
  const wideDir = bDir ? resolve(bDir) : ROOT;
  const pin = pinPlan({ BENCH_PIN: '1' }, availableParallelism());
  if (!pin) throw new Error('bench:wide needs two CPUs or more');
  pinSelf(pin);
  const tmp = mkdtempSync(join(tmpdir(), 'peregrine-wide-'));
  try {
    const up = await startWideUpstream({ node: process.execPath, root: ROOT }, n);
    const load = skipLoad ? [] : await loadRounds(up, wideDir, rounds, tmp, pin);
    const health = skipHealth ? [] : await healthCost(up, wideDir, seconds, tmp, pin);
    process.stdout.write(`${report(n, load, health, wideDir)}\n`);
    const out = join(ROOT, 'bench/results');
    mkdirSync(out, { recursive: true });
    writeFileSync(
      join(out, `wide-${fileStamp()}.json`),
      `${JSON.stringify({ n, wideDir, load, health }, null, 2)}\n`,
    );
  } finally {
    await stopAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (import.meta.main) runMain('bench:wide', main);
