/**
 * Instructions per request, counted by valgrind's callgrind: a deterministic cost measure for a
 * noisy machine. req/s of one config varies 1.5x between minutes on a shared VM; the user-space
 * instructions a proxy executes for a fixed number of requests repeat within ~2% (once the share
 * of a JIT compilation that happens to land in the counted window is left out).
 *
 * For each target: starts the bench upstream (and the OTLP sink when `observed` is measured) as
 * bench/profile.ts does, runs the target under `valgrind --tool=callgrind` with instrumentation
 * off, warms it up with a fixed number of requests (autocannon, 50 connections), switches
 * instrumentation on, sends 2000 settling requests, zeroes the counters, sends exactly N requests
 * and dumps. Ir of that dump / N is the cost of a request; the share of V8's optimising compilers
 * and of the GC in it is summed from `callgrind_annotate` (leftover JIT compilation distorts a
 * run). Kernel time is not counted. The dumps are kept in bench/results/ (kcachegrind,
 * callgrind_annotate).
 *
 *   node bench/instructions.ts [passthrough|lean|observed|ratelimit|bare-undici|bare-undici-default|express-hpm …]
 *   (default: passthrough bare-undici bare-undici-default)
 *   observed-no-log, observed-no-trace: observed without its access log, or without its tracing
 *   (exporter none, nothing sampled): with observed and passthrough, the share of each part
 *   sidecar-outbound, sidecar-inbound: one sidecar of a mesh hop (bench/lib/mesh.ts: registry, the
 *   inbound sidecar in front of the upstream, the outbound one in front of it, mTLS between them),
 *   that one under valgrind and the rest natively; the load goes to the outbound listener
 *   (Host: bench) either way. Under valgrind a sidecar probes its app and renews its lease seldom,
 *   the outbound side waits long for its peer and keeps 8 connections busy rather than 50 half
 *   idle (bench/lib/mesh-config.ts says why): the code a request runs is the same
 *   wide: passthrough over an upstream of BENCH_WIDE_ENDPOINTS (1000) endpoints, all served by one
 *   process (bench/peers/wide-upstream.ts, which then serves every target: passthrough's one
 *   endpoint is its first address)
 *   ratelimit-redis: the ratelimit route with its policy counted in a local redis-server (started
 *   natively): what the Redis store adds to a request, beside `ratelimit`. Under valgrind the
 *   gateway reads Redis's replies ~50x later than natively: the policy waits up to 1 s (not 50 ms)
 *   and the load uses RL_CONNECTIONS (4) connections, so the answered path is counted, not the
 *   insurance after a timeout; the report gives the decisions by outcome to show it
 *   registry-memory, registry-redis: one renewal (POST …/heartbeat) of the registration API, memory
 *   or Redis store (redis-server started natively), as bench:registry's heartbeats group sets the
 *   gateway up; registry-floor: a bare node:http server answering the same requests alike
 *   (bench/peers/heartbeat-floor.ts). BENCH_CG_RENEWERS (100) instances each renew over a
 *   keep-alive connection of their own, in turn and one at a time (bench/lib/registry-renewals.ts
 *   says why), not through autocannon; BENCH_CG_WAVE (1) at a time instead: 10 is how many of a
 *   1,000-instance fleet's renewals fall within the Redis store's 50 ms renewal batch
 *   BENCH_CG_WARMUP (40000): uninstrumented warmup requests
 *   BENCH_CG_REQUESTS (5000): requests in the counted window
 *   BENCH_CG_PERF_MAP=1: Peregrine targets (a sidecar target: the sidecar under valgrind) write V8's
 *     perf map (/tmp/perf-<pid>.map, the dump's pid), to name the JIT code addresses
 *     callgrind_annotate prints as 0x…
 *   BENCH_CG_CACHE_SIM=1: simulate the caches too (D1/LL misses per function in the dump; ~2× slower)
 *   BENCH_MESH_PROTOCOL (http1; h2): what the sidecar targets' hop speaks (bench/lib/mesh-config.ts)
 *
 * Needs valgrind (`apt-get install valgrind`); 1-3 minutes per target.
 */
import { execFile } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { callgrindTotal, costByCategory } from './lib/callgrind.ts';
import { intFromEnv } from './lib/env.ts';
import { launcherGcFlags as launcherGcFlagsOf, peregrineArgv, peregrineEnv } from './lib/launcher.ts';
import { type MeshCerts, makeMeshCerts, startMesh } from './lib/mesh.ts';
import { type PeregrineProfile, peregrineConfig, peregrineConfigYaml } from './lib/peregrine-config.ts';
import {
  findExecutable,
  freePort,
  installCleanup,
  type Managed,
  spawnManaged,
  stopAll,
  waitForHttp,
} from './lib/proc.ts';
import { startBenchRedis } from './lib/redis.ts';
import { benchRegistryToken, REGISTRY_TOKEN_ENV, registryGatewayYaml } from './lib/registry-config.ts';
import { RenewalFleet } from './lib/registry-renewals.ts';
import { fileStamp, fmtNum, markdownTable } from './lib/table.ts';
import { childEnv, startPeer, startPeregrine } from './lib/targets.ts';
import { startWideUpstream } from './lib/wide.ts';

const ROOT = join(import.meta.dirname, '..');
const WHICH = [
  'passthrough',
  'wide',
  'lean',
  'observed',
  'observed-no-log',
  'observed-no-trace',
  'ratelimit',
  'ratelimit-redis',
  'bare-undici',
  'bare-undici-default',
  'express-hpm',
  'sidecar-outbound',
  'sidecar-inbound',
  'registry-memory',
  'registry-redis',
  'registry-floor',
] as const;
type Which = (typeof WHICH)[number];
const DEFAULT_TARGETS: readonly Which[] = ['passthrough', 'bare-undici', 'bare-undici-default'];
/** The reference of the ratio column: the floor, with Peregrine's GC flags. */
const REFERENCE: Which = 'bare-undici';
const CONNECTIONS = 50;
/** ratelimit-redis's connections (see the header). */
const RL_CONNECTIONS = 4;
const SETTLE_REQUESTS = 2000;
/** Node start-up under valgrind takes 5-20 s on this kind of machine; be generous. */
const READY_MS = 120_000;
const log = (s: string) => process.stderr.write(`${s}\n`);
const run = promisify(execFile);

interface Tools {
  valgrind: string;
  control: string;
  annotate: string;
}

interface Measured {
  which: Which;
  requests: number;
  ir: number;
  compiler: number;
  gc: number;
  scavenge: number;
  kept: string;
  seconds: number;
  note?: string;
}

function findTools(): Tools {
  const dirs = ['/usr/bin', '/usr/local/bin'];
  const [valgrind, control, annotate] = ['valgrind', 'callgrind_control', 'callgrind_annotate'].map((n) =>
    findExecutable(n, dirs),
  );
  if (!valgrind || !control || !annotate) {
    const missing = [
      valgrind ? '' : 'valgrind',
      control ? '' : 'callgrind_control',
      annotate ? '' : 'callgrind_annotate',
    ].filter(Boolean);
    throw new Error(
      `${missing.join(', ')} not found: install valgrind (Debian/Ubuntu: apt-get install valgrind)`,
    );
  }
  return { valgrind, control, annotate };
}

function wideEndpoints(): number {
  return intFromEnv('BENCH_WIDE_ENDPOINTS', 1000, 2);
}

function envCount(name: string, fallback: number): number {
  const raw = process.env[name];
  const n = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(n) || n < CONNECTIONS) {
    throw new Error(`${name} must be an integer ≥ ${CONNECTIONS}, not ${JSON.stringify(raw)}`);
  }
  return n;
}

/**
 * BENCH_CG_CACHE_SIM=1: callgrind also simulates the caches (D1 and LL misses by function in the
 * dump, `callgrind_annotate --show=D1mr,D1mw,DLmr,DLmw`); the run is ~2× slower, Ir unchanged.
 */
const CACHE_SIM = process.env.BENCH_CG_CACHE_SIM === '1';

/** Peregrine launcher's GC flags (semi-space cap, heap growing), which `bare-undici` gets too. */
function launcherGcFlags(): string[] {
  return launcherGcFlagsOf(ROOT);
}

function callgrindArgs(outFile: string): string[] {
  return [
    '--tool=callgrind',
    '--smc-check=all-non-file',
    '--instr-atstart=no',
    `--callgrind-out-file=${outFile}`,
    ...(CACHE_SIM ? ['--cache-sim=yes'] : []),
  ];
}

interface Upstreams {
  upstream: string;
  /** The mesh's certificates, when a sidecar is measured. */
  certs: MeshCerts | undefined;
  otlp: string | undefined;
  /** The wide upstream's endpoints, when `wide` is measured. */
  wide: string[] | undefined;
}

interface UnderCallgrind {
  proc: Managed;
  /** Where the load goes, with `headers`. */
  url: string;
  headers?: Readonly<Record<string, string>>;
  /** Stop the processes started alongside it (the rest of a mesh). */
  stopRest?: () => Promise<void>;
  /** Sends `amount` requests its own way (instead of autocannon to `url`). */
  load?: (amount: number) => Promise<{ ok: number; failed: number }>;
  /** Something to say about the run once it is counted (read before the target stops). */
  note?: () => Promise<string | undefined>;
}

/** The heartbeats group's fleet shape (bench/lib/registry-heartbeats.ts): services, TTL. */
const RENEWAL_SERVICES = 10;
const RENEWAL_TTL_MS = 15_000;

/**
 * A registration API (or the floor) under valgrind, and a fleet of instances registered with it
 * that renew one at a time.
 */
async function startRegistryTarget(
  which: 'registry-memory' | 'registry-redis' | 'registry-floor',
  vg: readonly string[],
  valgrind: string,
  tmp: string,
): Promise<UnderCallgrind> {
  const instances = intFromEnv('BENCH_CG_RENEWERS', 100, 1);
  const wave = intFromEnv('BENCH_CG_WAVE', 1, 1);
  const port = await freePort();
  let proc: Managed;
  let redis: Awaited<ReturnType<typeof startBenchRedis>> | undefined;
  if (which === 'registry-floor') {
    const peer = await startPeer({ node: valgrind, root: ROOT }, 'heartbeat-floor.ts', {}, [
      ...vg,
      process.execPath,
      ...launcherGcFlags(),
    ]);
    proc = peer.proc;
    await readyOrStop(proc, [`${peer.origin}/`]);
    return withFleet(proc, peer.port, instances, wave, undefined);
  }
  if (which === 'registry-redis') redis = await startBenchRedis('redis-registry');
  const services = Array.from({ length: RENEWAL_SERVICES }, (_, k) => `hb-${k}`);
  try {
    const gw = await startPeregrine({
      name: `peregrine-${which}`,
      dir: ROOT,
      configFile: join(tmp, `${which}.yaml`),
      yaml: (listenPort, adminPort) =>
        registryGatewayYaml({
          listenPort,
          adminPort,
          port,
          store: redis === undefined ? 'memory' : 'redis',
          redisUrl: redis?.url,
          services: ['hb-*'],
          upstreams: services,
          rateLimit: { perSecond: 100_000, burst: 100_000 },
          maxInstancesPerService: Math.max(instances, 100),
        }),
      env: { [REGISTRY_TOKEN_ENV]: benchRegistryToken() },
      nodeArgs: perfMapFlag(),
      stdout: 'pipe',
      wrap: { command: valgrind, args: vg },
      readyTimeoutMs: READY_MS,
    });
    proc = gw.proc;
  } catch (err) {
    await redis?.proc.stop(2000);
    throw err;
  }
  return withFleet(proc, port, instances, wave, redis?.proc);
}

async function withFleet(
  proc: Managed,
  port: number,
  instances: number,
  wave: number,
  companion: Managed | undefined,
): Promise<UnderCallgrind> {
  let fleet: RenewalFleet;
  try {
    fleet = await RenewalFleet.open({
      port,
      token: benchRegistryToken(),
      instances,
      services: RENEWAL_SERVICES,
      ttlMs: RENEWAL_TTL_MS,
    });
    await fleet.register();
  } catch (err) {
    await proc.stop(5000);
    await companion?.stop(2000);
    throw err;
  }
  return {
    proc,
    url: `http://127.0.0.1:${port}/`,
    load: (amount) => fleet.renew(amount, wave),
    stopRest: async () => {
      fleet.close();
      await companion?.stop(2000);
    },
  };
}

/** The target under valgrind, ready to answer. */
async function startUnderCallgrind(
  which: Which,
  tools: Tools,
  tmp: string,
  outFile: string,
  up: Upstreams,
): Promise<UnderCallgrind> {
  const node = process.execPath;
  const vg = callgrindArgs(outFile);
  if (which === 'registry-memory' || which === 'registry-redis' || which === 'registry-floor')
    return startRegistryTarget(which, vg, tools.valgrind, tmp);
  if (which === 'sidecar-outbound' || which === 'sidecar-inbound') {
    // The whole mesh hop, with this one sidecar under valgrind; the load goes to the outbound one.
    const role = which === 'sidecar-outbound' ? 'outbound' : 'inbound';
    const mesh = await startMesh(
      { peregrineDir: ROOT, tmpDir: tmp, pin: undefined, upstream: { origin: up.upstream } },
      up.certs!,
      {
        wrapped: { role, command: tools.valgrind, args: vg, readyTimeoutMs: READY_MS },
        nodeArgs: { role, args: perfMapFlag() },
        passthrough: false,
      },
    );
    return {
      proc: mesh[role].proc,
      url: mesh.url,
      headers: mesh.headers,
      stopRest: () => mesh.stop(),
    };
  }
  if (which === 'bare-undici' || which === 'bare-undici-default' || which === 'express-hpm') {
    // Like the wall-clock bench: express-hpm and bare-undici-default on Node's defaults.
    const flags = which === 'bare-undici' ? launcherGcFlags() : [];
    // startPeer runs `<node> <nodeArgs…> bench/peers/<file>`: valgrind is the "node" here.
    const peer = await startPeer(
      { node: tools.valgrind, root: ROOT },
      which === 'express-hpm' ? 'express-hpm.ts' : 'bare-undici.ts',
      { UPSTREAM: up.upstream },
      [...vg, node, ...flags],
    );
    const url = `${peer.origin}/`;
    await readyOrStop(peer.proc, [url]);
    return { proc: peer.proc, url };
  }
  const [listenPort, adminPort] = [await freePort(), await freePort()];
  const config = join(tmp, `peregrine-${which}.yaml`);
  const redis = which === 'ratelimit-redis' ? await startBenchRedis('redis-ratelimit') : undefined;
  writeFileSync(
    config,
    peregrineYaml(which, {
      listenPort,
      adminPort,
      upstreamOrigin: up.upstream,
      otlpEndpoint: up.otlp,
      endpoints: which === 'wide' ? up.wide : undefined,
      redisUrl: redis?.url,
    }),
  );
  const proc = spawnManaged(
    `peregrine-${which}`,
    tools.valgrind,
    [...vg, node, ...perfMapFlag(), ...peregrineArgv(ROOT), 'run', '--config', config],
    { env: peregrineEnv(ROOT, childEnv()), cwd: ROOT, stdout: 'ignore' },
  );
  const url = `http://127.0.0.1:${listenPort}/`;
  try {
    await readyOrStop(proc, [`http://127.0.0.1:${adminPort}/readyz`, url]);
  } catch (err) {
    await redis?.proc.stop(2000);
    throw err;
  }
  if (redis === undefined) return { proc, url };
  return {
    proc,
    url,
    load: (amount) => send(url, amount, {}, RL_CONNECTIONS),
    note: () => decisionsByOutcome(`http://127.0.0.1:${adminPort}/metrics`),
    stopRest: async () => {
      await redis.proc.stop(2000);
    },
  };
}

/** The rate limit decisions since start, by outcome, from the gateway's metrics. */
async function decisionsByOutcome(metricsUrl: string): Promise<string | undefined> {
  const text = await (await fetch(metricsUrl)).text();
  const outcomes: string[] = [];
  for (const m of text.matchAll(/^peregrine_ratelimit_decisions_total\{[^}]*outcome="(\w+)"[^}]*\} (\d+)/gm))
    if (m[2] !== '0') outcomes.push(`${m[1]} ${m[2]}`);
  return outcomes.length > 0 ? `decisions since start: ${outcomes.join(', ')}` : undefined;
}

/** The bench config of a Peregrine target; the observed variants each turn one part off. */
function peregrineYaml(which: Which, o: Omit<Parameters<typeof peregrineConfig>[0], 'profile'>): string {
  if (which === 'observed-no-log' || which === 'observed-no-trace') {
    const config = peregrineConfig({ ...o, profile: 'observed' });
    const telemetry = config.telemetry!;
    if (which === 'observed-no-log') telemetry.accessLog = { enabled: false };
    else telemetry.tracing = { exporter: 'none', sampleRatio: 0 };
    return `# ${which}\n${stringify(config)}`;
  }
  if (which === 'ratelimit-redis') {
    const config = peregrineConfig({ ...o, profile: which });
    const bench = (config.policies as Record<string, { store: Record<string, unknown> }>).bench!;
    bench.store.timeout = '1s';
    return `# ${which}, store timeout 1 s under valgrind\n${stringify(config)}`;
  }
  return peregrineConfigYaml({
    ...o,
    profile: which === 'wide' ? 'passthrough' : (which as PeregrineProfile),
  });
}

/**
 * BENCH_CG_PERF_MAP=1: V8 writes /tmp/perf-<pid>.map, which names the JIT code addresses that
 * callgrind_annotate shows as `0x…` (JavaScript functions compiled by V8).
 */
function perfMapFlag(): string[] {
  return process.env.BENCH_CG_PERF_MAP === '1' ? ['--perf-basic-prof'] : [];
}

/** Wait for each URL to answer 200 in turn; stop the process when it never does. */
async function readyOrStop(proc: Managed, urls: readonly string[]): Promise<void> {
  try {
    for (const url of urls) await waitForHttp(url, { proc, timeoutMs: READY_MS });
  } catch (err) {
    await proc.stop(5000);
    throw err;
  }
}

interface AmountResult {
  '2xx': number;
  non2xx: number;
  errors: number;
  timeouts: number;
}

type Autocannon = (opts: {
  url: string;
  connections: number;
  amount: number;
  timeout: number;
  headers: Readonly<Record<string, string>>;
}) => Promise<AmountResult>;

/** Exactly `amount` requests over 50 connections (autocannon, in this process); how many were 2xx. */
async function send(
  url: string,
  amount: number,
  headers: Readonly<Record<string, string>> = {},
  connections = CONNECTIONS,
): Promise<{ ok: number; failed: number }> {
  const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;
  // Generous timeout: the target runs ~50x slower under valgrind.
  const r = await autocannon({ url, connections, amount, timeout: 30, headers });
  return { ok: r['2xx'], failed: r.non2xx + r.errors };
}

/** Fail with the target's own output when it died (valgrind or Node crashed, or was killed). */
function assertRunning(proc: Managed, when: string): void {
  if (!proc.running) {
    throw new Error(
      `${proc.name} exited (${proc.exit?.code ?? proc.exit?.signal}) ${when}:\n${proc.output()}`,
    );
  }
}

/** `amount` requests to the target, which must still be running afterwards. */
async function load(target: UnderCallgrind, amount: number): Promise<{ ok: number; failed: number }> {
  const { proc, url, headers } = target;
  const r = target.load ? await target.load(amount) : await send(url, amount, headers);
  assertRunning(proc, `during ${amount} requests`);
  return r;
}

/** callgrind_control exits 0 even when it finds no such process: its output tells. */
async function callgrindControl(tools: Tools, proc: Managed, args: readonly string[]): Promise<void> {
  assertRunning(proc, `before callgrind_control ${args.join(' ')}`);
  const cmd = `callgrind_control ${args.join(' ')} ${proc.pid}`;
  let out: string;
  try {
    const r = await run(tools.control, [...args, String(proc.pid)], { timeout: 60_000 });
    out = r.stdout + r.stderr;
  } catch (err) {
    const e = err as Error & { stdout?: string };
    throw new Error(`${cmd} failed: ${e.message}\n${e.stdout ?? ''}`);
  }
  if (/^Error/m.test(out)) throw new Error(`${cmd} failed:\n${out}`);
}

/** Wait until the dump file is complete (its `totals:` line is written last). */
async function waitForDump(file: string, proc: Managed, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (existsSync(file)) {
      const text = readFileSync(file, 'utf8');
      if (/^totals:/m.test(text)) return text;
    }
    if (!proc.running) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${proc.name}: no complete callgrind dump in ${file}:\n${proc.output()}`);
}

async function measure(
  which: Which,
  tools: Tools,
  tmp: string,
  up: Upstreams,
  counts: { warmup: number; requests: number },
): Promise<Measured> {
  const t0 = Date.now();
  const outFile = join(tmp, `${which}.cg.out`);
  log(`${which}: starting under callgrind`);
  const target = await startUnderCallgrind(which, tools, tmp, outFile, up);
  const { proc } = target;
  try {
    log(`${which}: ready after ${fmtNum((Date.now() - t0) / 1000, 0)} s; ${counts.warmup} warmup requests`);
    await load(target, counts.warmup);
    await callgrindControl(tools, proc, ['-i', 'on']);
    await load(target, SETTLE_REQUESTS);
    await callgrindControl(tools, proc, ['-z']);
    log(`${which}: counting ${counts.requests} requests`);
    const window = await load(target, counts.requests);
    await callgrindControl(tools, proc, ['-d']);
    const dumpFile = `${outFile}.1`;
    const ir = callgrindTotal(await waitForDump(dumpFile, proc));
    const targetNote = await target.note?.();
    await proc.stop(15_000);
    const resultsDir = join(ROOT, 'bench/results');
    mkdirSync(resultsDir, { recursive: true });
    const kept = join(resultsDir, `${fileStamp()}-${which}.callgrind.out`);
    copyFileSync(dumpFile, kept);
    const { stdout } = await run(tools.annotate, ['--threshold=100', '--auto=no', '--show=Ir', kept], {
      maxBuffer: 256 * 1024 * 1024,
    });
    const cost = costByCategory(stdout);
    // Divide by the requests that completed; say so when that is not all of them.
    const note =
      [
        window.failed > 0 || window.ok !== counts.requests
          ? `${window.ok} of ${counts.requests} requests answered 2xx, ${window.failed} failed`
          : undefined,
        targetNote,
      ]
        .filter((n) => n !== undefined)
        .join('; ') || undefined;
    if (window.ok === 0) throw new Error(`${which}: no request of the counted window answered 2xx`);
    const requests = window.ok;
    const seconds = (Date.now() - t0) / 1000;
    log(`${which}: ${fmtNum(ir / requests / 1000, 1)}k Ir/request (${fmtNum(seconds, 0)} s)`);
    return {
      which,
      requests,
      ir: ir / requests,
      compiler: cost.compiler / requests,
      gc: cost.gc / requests,
      scavenge: cost.scavenge / requests,
      kept,
      seconds,
      note,
    };
  } finally {
    await proc.stop(15_000);
    await target.stopRest?.();
  }
}

function label(which: Which): string {
  if (which === 'bare-undici') return `bare-undici (${launcherGcFlags().join(' ') || 'no flags'})`;
  if (which === 'bare-undici-default') return 'bare-undici (Node defaults)';
  if (which === 'express-hpm') return 'express + http-proxy-middleware (Node defaults)';
  if (which === 'wide') return `peregrine passthrough, ${wideEndpoints()} endpoints`;
  if (which === 'registry-floor') return 'bare node:http answering renewals alike (heartbeat-floor.ts)';
  if (which === 'registry-memory' || which === 'registry-redis')
    return `peregrine renewal, ${which.slice('registry-'.length)} store`;
  if (which === 'sidecar-outbound' || which === 'sidecar-inbound')
    return `peregrine ${which.slice('sidecar-'.length)} sidecar of a mesh hop (mTLS, registry; the other sidecar natively)`;
  return `peregrine ${which} (launcher: ${peregrineArgv(ROOT).slice(0, -1).join(' ') || 'no flags'})`;
}

function report(
  rows: readonly Measured[],
  failed: readonly string[],
  counts: { warmup: number; requests: number },
): string {
  // Registry targets alone: the ratios are to their own floor.
  const ref = rows.find((r) => r.which === REFERENCE) ?? rows.find((r) => r.which === 'registry-floor');
  const refName = ref?.which ?? REFERENCE;
  const k = (n: number) => fmtNum(n / 1000, 1);
  return [
    `## Instructions per request (callgrind), ${new Date().toISOString()}`,
    '',
    `Node ${process.version}; ${counts.warmup} warmup requests uninstrumented, ${SETTLE_REQUESTS} settling, ` +
      `${counts.requests} counted; ${CONNECTIONS} connections (autocannon)` +
      (rows.some((r) => r.which.startsWith('registry-'))
        ? `; registry targets: ${intFromEnv('BENCH_CG_RENEWERS', 100, 1)} instances renewing over a connection each, ` +
          `${intFromEnv('BENCH_CG_WAVE', 1, 1)} at a time (BENCH_CG_WAVE)`
        : '') +
      '. User-space instructions ' +
      `(Ir) of the target process only, kernel excluded; k = thousands.`,
    '',
    markdownTable(
      [
        'target',
        'k Ir/req',
        `× ${refName}`,
        'compiler k/req',
        'gc k/req',
        'of it scavenges',
        'k excl. compiler',
        '× excl.',
        'k excl. compiler, gc',
        '× excl. both',
      ],
      rows.map((r) => [
        label(r.which),
        k(r.ir),
        ref ? fmtNum(r.ir / ref.ir, 2) : 'n/a',
        k(r.compiler),
        k(r.gc),
        k(r.scavenge),
        k(r.ir - r.compiler),
        ref ? fmtNum((r.ir - r.compiler) / (ref.ir - ref.compiler), 2) : 'n/a',
        k(r.ir - r.compiler - r.gc),
        ref ? fmtNum((r.ir - r.compiler - r.gc) / (ref.ir - ref.compiler - ref.gc), 2) : 'n/a',
      ]),
      ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
    ),
    '',
    "A compilation by V8's optimising compilers that happens to land in the counted window adds " +
      'several k/req to a run (one ~45 M-instruction compilation is 9k/req over 5000 requests); the ' +
      '"excl. compiler" columns leave it out and repeat better. The gc column is lumpy: the window ' +
      'holds only a few scavenges and mark-compacts, and V8 sizes its heap by wall-clock speed, which ' +
      'valgrind slows ~50×; "of it scavenges" is the young generation\'s share (allocation), the rest ' +
      'mostly major GC, which costs by the live heap; the last two columns leave GC out as well (the ' +
      'code a request runs).',
    '',
    ...rows.filter((r) => r.note).map((r) => `- ${r.which}: ${r.note}`),
    ...failed.map((f) => `- failed: ${f}`),
    ...(failed.length > 0 || rows.some((r) => r.note) ? [''] : []),
    'Dumps (callgrind_annotate, kcachegrind):',
    '',
    ...rows.map((r) => `- ${r.which}: ${relative(process.cwd(), r.kept)} (${fmtNum(r.seconds, 0)} s)`),
  ].join('\n');
}

async function main(): Promise<void> {
  installCleanup(log);
  const args = process.argv.slice(2);
  const bad = args.filter((a) => !(WHICH as readonly string[]).includes(a));
  if (bad.length > 0) {
    throw new Error(
      `unknown target ${bad.join(', ')}; usage: node bench/instructions.ts [${WHICH.join('|')} …]`,
    );
  }
  const targets = args.length > 0 ? (args as Which[]) : [...DEFAULT_TARGETS];
  const counts = {
    warmup: envCount('BENCH_CG_WARMUP', 40_000),
    requests: envCount('BENCH_CG_REQUESTS', 5000),
  };
  const tools = findTools();
  const node = process.execPath;
  const tmp = mkdtempSync(join(tmpdir(), 'peregrine-instructions-'));
  process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
  const rows: Measured[] = [];
  const failed: string[] = [];
  try {
    let upstream: { origin: string };
    let wide: string[] | undefined;
    if (targets.includes('wide')) {
      const w = await startWideUpstream({ node, root: ROOT }, wideEndpoints());
      upstream = w;
      wide = w.origins;
    } else {
      const peer = await startPeer({ node, root: ROOT }, 'upstream.ts');
      await waitForHttp(`${peer.origin}/`, { proc: peer.proc });
      upstream = peer;
    }
    let otlp: string | undefined;
    if (targets.some((t) => t.startsWith('observed'))) {
      const sink = await startPeer({ node, root: ROOT }, 'otlp-sink.ts');
      await waitForHttp(`${sink.origin}/stats`, { proc: sink.proc });
      otlp = sink.origin;
    }
    const certs = targets.some((t) => t.startsWith('sidecar-')) ? await makeMeshCerts(tmp) : undefined;
    for (const which of targets) {
      try {
        rows.push(await measure(which, tools, tmp, { upstream: upstream.origin, otlp, wide, certs }, counts));
      } catch (err) {
        log(`${which} failed: ${(err as Error).stack ?? String(err)}`);
        failed.push(`${which}: ${(err as Error).message.split('\n', 1)[0]}`);
      }
    }
    process.stdout.write(`${report(rows, failed, counts)}\n`);
  } finally {
    await stopAll();
  }
  if (failed.length > 0) throw new Error(`${failed.length} target(s) failed`);
}

main().then(
  () => process.exit(0),
  async (err: unknown) => {
    log(`instructions failed: ${(err as Error).stack ?? String(err)}`);
    await stopAll();
    process.exit(1);
  },
);
