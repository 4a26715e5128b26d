/**
 * Allocations per request: what a proxy allocates on V8's heap for each request, where, how often
 * that triggers a scavenge, and what the process holds. Allocation depends little on CPU
 * contention, so unlike req/s it can be measured on a shared machine, at a low fixed rate.
 *
 * For each target: starts it (Peregrine with the bench config, or a Node peer with the launcher's
 * GC flags) with the inspector on a loopback port, warms it up with a paced load, then, over the
 * inspector, counts GCs (a `gc` PerformanceObserver in the target) and runs V8's sampling heap
 * profiler with the objects that minor and major GCs collected kept in the profile, so its total is
 * everything allocated in the window, not what survived. A second paced load of exactly N requests
 * is the window. Reports bytes allocated per request, scavenges per 10,000 requests, the target's
 * heap spaces and RSS at the end of the window, and the call sites that allocate most (self, and
 * attributed to the nearest Peregrine frame).
 *
 *   node bench/allocations.ts [passthrough|observed|lean|ratelimit|ratelimit-redis|bare-undici|sidecar-outbound|sidecar-inbound …]
 *   (default: bare-undici passthrough observed)
 *   sidecar-outbound, sidecar-inbound: one sidecar of a mesh hop (bench/lib/mesh.ts), the other
 *   natively; the load goes to the outbound listener (Host: bench) either way
 *   ratelimit-redis: the ratelimit route counted in a local redis-server (started with it)
 *   BENCH_ALLOC_RATE (500): requests per second (≤ 1000: a load that leaves the machine to others)
 *   BENCH_ALLOC_REQUESTS (10000): requests in the counted window
 *   BENCH_ALLOC_WARMUP (5000): requests before it
 *   BENCH_ALLOC_TOP (15): call sites listed per target
 *   BENCH_PEREGRINE_DIR: measure the Peregrine in that directory (e.g. `git archive` of a commit)
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { intFromEnv } from './lib/env.ts';
import { bytesBySite, type HeapProfileNode, largest, totalBytes } from './lib/heap-profile.ts';
import { peregrineArgv } from './lib/launcher.ts';
import { makeMeshCerts, startMesh } from './lib/mesh.ts';
import { PacedLoad, pacedFailures } from './lib/paced.ts';
import { peregrineConfigYaml } from './lib/peregrine-config.ts';
import { installCleanup, type Managed, runMain, stopAll, waitForHttp } from './lib/proc.ts';
import { startBenchRedis } from './lib/redis.ts';
import { readRssKiB } from './lib/rss.ts';
import { fileStamp, fmtInt, fmtNum, markdownTable } from './lib/table.ts';
import { startPeer, startPeregrine, startUpstreamAndSink } from './lib/targets.ts';

const ROOT = join(import.meta.dirname, '..');
const PEREGRINE_DIR = process.env.BENCH_PEREGRINE_DIR || ROOT;
const WHICH = [
  'passthrough',
  'observed',
  'lean',
  'ratelimit',
  'ratelimit-redis',
  'bare-undici',
  'sidecar-outbound',
  'sidecar-inbound',
] as const;
type Which = (typeof WHICH)[number];
const CONNECTIONS = 50;
const SAMPLING_INTERVAL = 8192;
const log = (s: string) => process.stderr.write(`${s}\n`);

interface Measured {
  which: Which;
  requests: number;
  bytes: number;
  scavenges: number;
  markCompacts: number;
  rssMB: number;
  memory: Record<string, number>;
  /** After a full GC at the end of the window: what the process holds. */
  live: Record<string, number>;
  newSpaceMB: number;
  selfSites: [string, number][];
  ownSites: [string, number][];
  /** The sampling heap profile of the window (Chrome DevTools opens it). */
  kept: string;
  note?: string;
}

/** A minimal Chrome DevTools Protocol session over the inspector's WebSocket. */
class Inspector {
  readonly #ws: WebSocket;
  #id = 0;
  readonly #waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.addEventListener('message', (ev) => {
      const msg = JSON.parse(String(ev.data)) as {
        id?: number;
        result?: unknown;
        error?: { message: string };
      };
      const w = msg.id === undefined ? undefined : this.#waiting.get(msg.id);
      if (w === undefined) return;
      this.#waiting.delete(msg.id!);
      if (msg.error) w.reject(new Error(msg.error.message));
      else w.resolve(msg.result);
    });
  }

  static async connect(url: string): Promise<Inspector> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener('open', () => resolve(), { once: true });
      ws.addEventListener('error', () => reject(new Error(`inspector ${url}: could not connect`)), {
        once: true,
      });
    });
    return new Inspector(ws);
  }

  send<T>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    const id = ++this.#id;
    return new Promise<T>((resolve, reject) => {
      this.#waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Evaluate an expression in the target (with the command-line API: `require`); its JSON value. */
  async evaluate<T>(expression: string): Promise<T> {
    const r = await this.send<{ result: { value: T }; exceptionDetails?: { text: string } }>(
      'Runtime.evaluate',
      { expression, includeCommandLineAPI: true, returnByValue: true },
    );
    if (r.exceptionDetails) throw new Error(`evaluate failed: ${r.exceptionDetails.text}`);
    return r.result.value;
  }

  close(): void {
    this.#ws.close();
  }
}

/** The inspector's WebSocket address, from the line Node prints on stderr. */
async function inspectorUrl(proc: Managed, timeoutMs = 15_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const m = /Debugger listening on (ws:\/\/\S+)/.exec(proc.output());
    if (m) return m[1]!;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${proc.name}: no inspector address:\n${proc.output()}`);
}

const INSTALL_GC_COUNTER = `(() => {
  const { PerformanceObserver, constants } = require('node:perf_hooks');
  const counts = { minor: 0, major: 0 };
  globalThis.__allocBenchGc = counts;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (e.detail.kind === constants.NODE_PERFORMANCE_GC_MINOR) counts.minor++;
      else if (e.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR) counts.major++;
    }
  }).observe({ entryTypes: ['gc'] });
  return true;
})()`;

const READ_STATE = `(() => {
  const v8 = require('node:v8');
  const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, s.space_size]));
  return { gc: { ...globalThis.__allocBenchGc }, memory: process.memoryUsage(), spaces };
})()`;

interface TargetState {
  gc: { minor: number; major: number };
  memory: Record<string, number>;
  spaces: Record<string, number>;
}

interface StartedTarget {
  /** The process measured. */
  proc: Managed;
  url: string;
  headers?: Readonly<Record<string, string>>;
  stop(): Promise<void>;
}

async function startTarget(
  which: Which,
  tmp: string,
  upstream: string,
  otlp: string | undefined,
): Promise<StartedTarget> {
  const inspect = ['--inspect=127.0.0.1:0'];
  if (which === 'sidecar-outbound' || which === 'sidecar-inbound') {
    const role = which === 'sidecar-outbound' ? 'outbound' : 'inbound';
    const mesh = await startMesh(
      { peregrineDir: PEREGRINE_DIR, tmpDir: tmp, pin: undefined, upstream: { origin: upstream } },
      await makeMeshCerts(mkdtempSync(join(tmp, 'mesh-'))),
      { passthrough: false, nodeArgs: { role, args: inspect } },
    );
    return { proc: mesh[role].proc, url: mesh.url, headers: mesh.headers, stop: mesh.stop };
  }
  if (which === 'bare-undici') {
    // With the launcher's GC flags, as bench/instructions.ts gives it.
    const gcFlags = peregrineArgv(ROOT).filter((a) =>
      /^--(?:(?:max|min)-semi-space-size|heap-growing-percent)=/.test(a),
    );
    const peer = await startPeer(
      { node: process.execPath, root: ROOT },
      'bare-undici.ts',
      { UPSTREAM: upstream },
      [...inspect, ...gcFlags],
    );
    const url = `${peer.origin}/`;
    await waitForHttp(url, { proc: peer.proc });
    return { proc: peer.proc, url, stop: () => peer.proc.stop(5000).then(() => undefined) };
  }
  const redis = which === 'ratelimit-redis' ? await startBenchRedis('redis-ratelimit') : undefined;
  const g = await startPeregrine({
    name: `peregrine-${which}`,
    dir: PEREGRINE_DIR,
    configFile: join(tmp, `peregrine-${which}.yaml`),
    yaml: (listenPort, adminPort) =>
      peregrineConfigYaml({
        profile: which,
        listenPort,
        adminPort,
        upstreamOrigin: upstream,
        otlpEndpoint: otlp,
        redisUrl: redis?.url,
      }),
    nodeArgs: inspect,
  });
  const stop = async (): Promise<void> => {
    await g.proc.stop(5000);
    await redis?.proc.stop(2000);
  };
  return { proc: g.proc, url: g.url, stop };
}

async function measure(
  which: Which,
  tmp: string,
  upstream: string,
  otlp: string | undefined,
  o: { rate: number; requests: number; warmup: number; top: number },
): Promise<Measured> {
  const target = await startTarget(which, tmp, upstream, otlp);
  const { proc, url, headers } = target;
  const inspector = await Inspector.connect(await inspectorUrl(proc));
  const load = new PacedLoad(url, CONNECTIONS);
  try {
    log(`${which}: warmup, ${o.warmup} requests at ${o.rate}/s`);
    await load.run(o.rate, o.warmup / o.rate, headers);
    await inspector.evaluate(INSTALL_GC_COUNTER);
    const before = await inspector.evaluate<TargetState>(READ_STATE);
    await inspector.send('HeapProfiler.startSampling', {
      samplingInterval: SAMPLING_INTERVAL,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
    log(`${which}: counting ${o.requests} requests at ${o.rate}/s`);
    let rssKiB = 0;
    const rssTimer = setInterval(() => {
      rssKiB = Math.max(rssKiB, readRssKiB(proc.pid) ?? 0);
    }, 250);
    const window = await load.run(o.rate, o.requests / o.rate, headers);
    clearInterval(rssTimer);
    rssKiB = Math.max(rssKiB, readRssKiB(proc.pid) ?? 0);
    const { profile } = await inspector.send<{ profile: { head: HeapProfileNode } }>(
      'HeapProfiler.stopSampling',
    );
    const after = await inspector.evaluate<TargetState>(READ_STATE);
    await inspector.send('HeapProfiler.collectGarbage');
    const live = (await inspector.evaluate<TargetState>(READ_STATE)).memory;
    const failed = pacedFailures(window);
    const requests = window.sent - failed;
    const { self, own } = bytesBySite(
      profile.head,
      (url) => url.includes(`${PEREGRINE_DIR}/src/`),
      [`${PEREGRINE_DIR}/`, `${ROOT}/`],
      '(outside Peregrine code)',
    );
    const resultsDir = join(ROOT, 'bench/results');
    mkdirSync(resultsDir, { recursive: true });
    const kept = join(resultsDir, `${fileStamp()}-${which}.heapprofile`);
    writeFileSync(kept, JSON.stringify(profile));
    return {
      which,
      requests,
      bytes: totalBytes(profile.head) / requests,
      scavenges: ((after.gc.minor - before.gc.minor) * 10_000) / requests,
      markCompacts: ((after.gc.major - before.gc.major) * 10_000) / requests,
      rssMB: rssKiB / 1024,
      memory: after.memory,
      live,
      newSpaceMB: (after.spaces.new_space ?? 0) / 2 ** 20,
      selfSites: largest(self, o.top),
      ownSites: largest(own, o.top),
      kept,
      note: failed > 0 ? `${failed} of ${window.sent} requests failed` : undefined,
    };
  } finally {
    inspector.close();
    await load.close();
    await target.stop();
  }
}

function report(rows: readonly Measured[], o: { rate: number; requests: number; warmup: number }): string {
  const mb = (n: number | undefined) => fmtNum((n ?? 0) / 2 ** 20, 1);
  const perReq = (rows: [string, number][], n: number) =>
    markdownTable(
      ['call site', 'bytes/req'],
      rows.map(([s, b]) => [s, fmtInt(Math.round(b / n))]),
      ['left', 'right'],
    );
  return [
    `## Allocations per request, ${new Date().toISOString()}`,
    '',
    `Node ${process.version}; ${o.warmup} warmup requests, then ${o.requests} counted, paced at ${o.rate}/s ` +
      `over at most ${CONNECTIONS} connections. Bytes: V8's sampling heap profiler (every ${SAMPLING_INTERVAL} ` +
      'bytes, objects later collected kept), so ±2-3%; GCs: a `gc` PerformanceObserver in the target. ' +
      'Memory: at the end of the window (max RSS: the most seen during it), and after a full GC then.',
    '',
    markdownTable(
      [
        'target',
        'bytes/req',
        'scavenges/10k req',
        'mark-compacts/10k',
        'max RSS MB',
        'heap total MB',
        'heap used MB',
        'new space MB',
        'external MB',
        'after GC: RSS MB',
        'heap used MB',
        'external MB',
      ],
      rows.map((r) => [
        r.which,
        fmtInt(Math.round(r.bytes)),
        fmtNum(r.scavenges, 1),
        fmtNum(r.markCompacts, 1),
        fmtNum(r.rssMB, 1),
        mb(r.memory.heapTotal),
        mb(r.memory.heapUsed),
        fmtNum(r.newSpaceMB, 1),
        mb(r.memory.external),
        mb(r.live.rss),
        mb(r.live.heapUsed),
        mb(r.live.external),
      ]),
      ['left', ...Array<'right'>(11).fill('right')],
    ),
    '',
    ...rows.filter((r) => r.note).map((r) => `- ${r.which}: ${r.note}`),
    ...rows.map((r) => `- ${r.which}: profile in ${relative(process.cwd(), r.kept)}`),
    '',
    ...rows.flatMap((r) => [
      `### ${r.which}: where it is allocated`,
      '',
      perReq(r.selfSites, r.requests),
      '',
      ...(r.which === 'bare-undici'
        ? []
        : [`### ${r.which}: by the nearest Peregrine frame`, '', perReq(r.ownSites, r.requests), '']),
    ]),
  ].join('\n');
}

async function main(): Promise<void> {
  installCleanup(log);
  const args = process.argv.slice(2);
  const bad = args.filter((a) => !(WHICH as readonly string[]).includes(a));
  if (bad.length > 0)
    throw new Error(
      `unknown target ${bad.join(', ')}; usage: node bench/allocations.ts [${WHICH.join('|')} …]`,
    );
  const targets =
    args.length > 0 ? (args as Which[]) : (['bare-undici', 'passthrough', 'observed'] as Which[]);
  const o = {
    rate: intFromEnv('BENCH_ALLOC_RATE', 500, 1),
    requests: intFromEnv('BENCH_ALLOC_REQUESTS', 10_000, 100),
    warmup: intFromEnv('BENCH_ALLOC_WARMUP', 5000, 0),
    top: intFromEnv('BENCH_ALLOC_TOP', 15, 1),
  };
  if (o.rate > 1000) throw new Error('BENCH_ALLOC_RATE above 1000/s is a load test, not this measurement');
  const tmp = mkdtempSync(join(tmpdir(), 'peregrine-allocations-'));
  process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
  try {
    const { upstream, otlp } = await startUpstreamAndSink(
      { node: process.execPath, root: ROOT },
      targets.includes('observed'),
    );
    const rows: Measured[] = [];
    for (const which of targets) rows.push(await measure(which, tmp, upstream, otlp, o));
    process.stdout.write(`${report(rows, o)}\n`);
  } finally {
    await stopAll();
  }
}

runMain('allocations', main);
