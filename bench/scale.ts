/**
 * `npm run bench:scale`: what Peregrine costs as its configuration grows. For each size (routes;
 * a quarter with an exact host of their own, routes/4 hosts, routes/10 upstreams: see
 * bench/lib/scale-config.ts) it generates the config and measures, with the gateway started as
 * it ships (bin/peregrine.js):
 *
 * - validate: wall time of `peregrine validate <file>` (process start to exit);
 * - start → ready: from spawning `peregrine run` to its admin /readyz answering 200;
 * - idle RSS: resident memory after 3 s idle;
 * - the probe idle: one keep-alive connection sending GETs back to back (2 ms apart) to an
 *   unchanged route for 3 s: p99 and max wait, the machine's own noise;
 * - reload: BENCH_SCALE_RELOADS (20) reloads by SIGHUP, each adding a route; "change served" is
 *   from the signal to the new route's first 200, and the probe measures how long requests waited
 *   meanwhile: p99 and max over all the reload windows;
 * - RSS after the reloads (3 s idle);
 * - scrape: one request to every route, then BENCH_SCALE_SCRAPES (3) scrapes of /metrics
 *   (OpenMetrics) with the probe running: the slowest scrape's time, its size and the probe's
 *   longest wait; RSS right after;
 * - route matching: RouteTable.match in a process of its own, ns of CPU time per request for the
 *   requests of the first ten routes (the same flat strings at every size: what the table's size
 *   costs a request) against the 10-route table, measured alternately; and spread across all
 *   routes (CPU caches included);
 * - and at BENCH_SCALE_LONG_SIZE (5000) routes, BENCH_SCALE_LONG_RELOADS (100) reloads: RSS after
 *   20 and after all of them (memory must stay flat).
 *
 * The goals of issue 19 are checked at 10,000 routes (and the flat memory at 5,000) and marked
 * PASS/MISS. Results are only as quiet as the machine: run it when nothing else does (the probe and
 * the gateway share the CPUs with whatever else runs). Progress goes to stderr, the report
 * (markdown) to stdout and the raw numbers to bench/results/scale-<date>.json.
 *
 * Environment: BENCH_SCALE_SIZES (100,1000,5000,10000), BENCH_SCALE_RELOADS (20),
 * BENCH_SCALE_SCRAPES (3), BENCH_SCALE_LONG_SIZE (5000; 0 skips), BENCH_SCALE_LONG_RELOADS (100),
 * BENCH_PEREGRINE_DIR (measure the Peregrine in that directory), BENCH_KEEP_TMP=1.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { intFromEnv } from './lib/env.ts';
import { peregrineArgv, peregrineEnv } from './lib/launcher.ts';
import { Probe, quantile } from './lib/probe.ts';
import {
  freePort,
  httpGet,
  installCleanup,
  type Managed,
  spawnManaged,
  stopAll,
  waitForHttp,
} from './lib/proc.ts';
import { treeRssKiB } from './lib/rss.ts';
import { scaleConfigYaml, scaleHosts, scaleRequest, scaleUpstreams } from './lib/scale-config.ts';
import { matchWorkload } from './lib/scale-match.ts';
import { fileStamp, fmtInt, fmtMs, fmtNum, markdownTable } from './lib/table.ts';
import { childEnv, startPeer } from './lib/targets.ts';

const ROOT = join(import.meta.dirname, '..');
const PEREGRINE_DIR = resolve(process.env.BENCH_PEREGRINE_DIR ?? ROOT);
const log = (s: string) => process.stderr.write(`${s}\n`);

function intList(name: string, fallback: readonly number[]): number[] {
  const raw = process.env[name];
  if (!raw) return [...fallback];
  return raw.split(',').map((s) => {
    const n = Number(s.trim());
    if (!Number.isInteger(n) || n < 1)
      throw new Error(`${name}: ${JSON.stringify(s)} is not a positive integer`);
    return n;
  });
}

const SIZES = intList('BENCH_SCALE_SIZES', [100, 1000, 5000, 10000]);
const RELOADS = intFromEnv('BENCH_SCALE_RELOADS', 20);
const SCRAPES = intFromEnv('BENCH_SCALE_SCRAPES', 3);
const LONG_SIZE = intFromEnv('BENCH_SCALE_LONG_SIZE', 5000, 0);
const LONG_RELOADS = intFromEnv('BENCH_SCALE_LONG_RELOADS', 100);

/** Issue 19's goals. */
const GOALS = {
  validateS: 2,
  readyS: 3,
  idleRssMB: 300,
  changeServedS: 2,
  probeP99Ms: 50,
  scrapeS: 0.5,
  scrapePauseMs: 50,
  matchRatio: 0.95,
  /** RSS after the long run over RSS after 20 reloads. */
  flatGrowth: 1.1,
} as const;
const GOAL_SIZE = 10_000;

interface SizeResult {
  routes: number;
  hosts: number;
  upstreams: number;
  validateS?: number;
  readyS?: number;
  idleRssMB?: number;
  changeServedS?: { median: number; max: number };
  probeP99Ms?: number;
  probeMaxMs?: number;
  rssAfterReloadsMB?: number;
  scrape?: { seconds: number; bytes: number; pauseMs: number };
  /** Right after the scrapes (every route has its series). */
  rssAfterScrapesMB?: number;
  /** ns per match of the first ten routes' requests, and its throughput relative to 10 routes. */
  matchNs?: number;
  matchRatio?: number;
  /** ns per match of requests spread across every route. */
  matchSpreadNs?: number;
  /** The probe before any reload: the machine's own noise. */
  baselineP99Ms?: number;
  baselineMaxMs?: number;
  long?: { reloads: number; rssAt20MB: number; rssAtEndMB: number };
  error?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rssMB = (pid: number): number | undefined => {
  const kib = treeRssKiB(pid);
  return kib === undefined ? undefined : kib / 1024;
};

async function timeValidate(file: string): Promise<number> {
  const start = performance.now();
  const code = await new Promise<number | null>((done) => {
    const child = spawn(process.execPath, [...peregrineArgv(PEREGRINE_DIR), 'validate', file], {
      env: peregrineEnv(PEREGRINE_DIR, childEnv()),
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    child.on('exit', done);
  });
  if (code !== 0) throw new Error(`validate exited ${code}`);
  return (performance.now() - start) / 1000;
}

interface Running {
  proc: Managed;
  base: string;
  admin: string;
  readyS: number;
}

async function startGateway(file: string, listenPort: number, adminPort: number): Promise<Running> {
  const start = performance.now();
  const proc = spawnManaged(
    'peregrine',
    process.execPath,
    [...peregrineArgv(PEREGRINE_DIR), 'run', '--config', file],
    { env: peregrineEnv(PEREGRINE_DIR, childEnv()), cwd: PEREGRINE_DIR, stdout: 'ignore' },
  );
  const admin = `http://127.0.0.1:${adminPort}`;
  await waitForHttp(`${admin}/readyz`, { proc, timeoutMs: 300_000 });
  return { proc, base: `http://127.0.0.1:${listenPort}`, admin, readyS: (performance.now() - start) / 1000 };
}

/** Reload k (1-based) adds route `reload-{k-1}`; resolves with the seconds until it answered 200. */
async function reloadOnce(
  gw: Running,
  write: (extraRoutes: number) => void,
  k: number,
): Promise<{ from: number; to: number }> {
  write(k);
  const from = performance.now();
  process.kill(gw.proc.pid, 'SIGHUP');
  const url = `${gw.base}/reload/${k - 1}`;
  for (;;) {
    const res = await httpGet(url, 30_000).catch(() => undefined);
    if (res?.status === 200) return { from, to: performance.now() };
    if (performance.now() - from > 120_000) throw new Error(`reload ${k}: ${url} not served after 120 s`);
    await sleep(5);
  }
}

/** One GET per route, `concurrency` at a time, so every route has its series. */
async function touchEveryRoute(gw: Running, routes: number, concurrency = 16): Promise<void> {
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= routes) return;
      const r = scaleRequest(i);
      const res = await httpGet(`${gw.base}${r.path}`, 30_000, r.host ? { headers: { host: r.host } } : {});
      if (res.status !== 200) throw new Error(`route r${i}: ${r.path} answered ${res.status}`);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

/**
 * One scrape, read as Prometheus reads it: the bytes counted as they arrive, never joined or
 * decoded. This process also runs the probe: joining and decoding 25-30 MB here took 90-140 ms of
 * its event loop and CPU (measured), which the scrape's time counted and the probe shared.
 */
function scrapeOnce(gw: Running): Promise<{ seconds: number; bytes: number }> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(
      `${gw.admin}/metrics`,
      {
        agent: false,
        timeout: 120_000,
        headers: {
          accept: 'application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5',
          connection: 'close',
        },
      },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(new Error(`/metrics answered ${res.statusCode}`));
          return;
        }
        let bytes = 0;
        res.on('data', (c: Buffer) => {
          bytes += c.length;
        });
        res.on('end', () => resolve({ seconds: (performance.now() - start) / 1000, bytes }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('/metrics: timed out')));
    req.on('error', reject);
    req.end();
  });
}

/**
 * ns per RouteTable.match (median of 7 rounds) in this process, over the requests of the first
 * ten routes or spread across all routes (see matchWorkload).
 */
function matchCost(routes: number, spread: boolean): number {
  const work = matchWorkload(routes, spread);
  const n = 2_000_000;
  let sink = 0;
  // CPU time of the process (every thread: GC helpers included), not wall time: on a busy
  // machine wall time also counts the turns other processes took on the core.
  const run = () => {
    const start = process.cpuUsage();
    sink += work.run(n);
    const used = process.cpuUsage(start);
    return ((used.user + used.system) * 1000) / n;
  };
  run();
  const rounds = Array.from({ length: 7 }, run).sort((a, b) => a - b);
  if (sink === 0) throw new Error('unreachable');
  return rounds[3]!;
}

/** matchCost in a fresh process, so earlier tables leave no JIT state behind. */
function matchCostApart(routes: number, spread: boolean): Promise<number> {
  return new Promise<number>((done, fail) => {
    // Compilation on the main thread: V8 then tiers up by counts alone, the same functions in the
    // same order at every size. With a compiler thread, which functions got TurboFan code of
    // their own and which were inlined varied from process to process (and more at 10,000
    // routes, whose table building keeps that thread busy), a difference of code, not of table.
    const args = [
      '--no-concurrent-recompilation',
      import.meta.filename,
      'match',
      String(routes),
      spread ? 'spread' : 'same',
    ];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    child.stdout.on('data', (c: Buffer) => {
      text += c.toString();
    });
    child.on('exit', (code) =>
      code === 0 ? done(Number(text.trim())) : fail(new Error(`match ${routes}: exit ${code}`)),
    );
  });
}

/**
 * ns per match at `routes` routes and at 10, the same requests, measured alternately (so a change
 * in the machine's load hits both alike), best of three each.
 */
async function matchAgainstTen(routes: number): Promise<{ ns: number; tenNs: number }> {
  let ns = Number.POSITIVE_INFINITY;
  let tenNs = Number.POSITIVE_INFINITY;
  for (let t = 0; t < 3; t++) {
    tenNs = Math.min(tenNs, await matchCostApart(10, false));
    ns = Math.min(ns, await matchCostApart(routes, false));
  }
  return { ns, tenNs };
}

async function measureSize(routes: number, dir: string, upstreamOrigin: string): Promise<SizeResult> {
  const result: SizeResult = { routes, hosts: scaleHosts(routes), upstreams: scaleUpstreams(routes) };
  const file = join(dir, `scale-${routes}.yaml`);
  const [listenPort, adminPort] = [await freePort(), await freePort()];
  const write = (extraRoutes: number) =>
    writeFileSync(file, scaleConfigYaml({ routes, listenPort, adminPort, upstreamOrigin, extraRoutes }));
  write(0);

  log(`[${routes}] validate`);
  result.validateS = await timeValidate(file);
  log(`[${routes}] start`);
  const gw = await startGateway(file, listenPort, adminPort);
  try {
    result.readyS = gw.readyS;
    await sleep(3000);
    result.idleRssMB = rssMB(gw.proc.pid);

    log(`[${routes}] ${RELOADS} reloads`);
    const probe = new Probe(`${gw.base}${scaleRequest(1).path}`);
    const idleFrom = performance.now();
    await sleep(3000);
    const idle = probe.between(idleFrom, performance.now()).map((p) => p.ms);
    result.baselineP99Ms = quantile(idle, 0.99);
    result.baselineMaxMs = Math.max(...idle);
    const windows: { from: number; to: number }[] = [];
    for (let k = 1; k <= RELOADS; k++) {
      windows.push(await reloadOnce(gw, write, k));
      await sleep(200);
    }
    await probe.stop();
    const waits = windows.flatMap((w) => probe.between(w.from, w.to).map((s) => s.ms));
    if (probe.samples.some((s) => s.status !== 200)) throw new Error('the probe saw a status other than 200');
    const served = windows.map((w) => (w.to - w.from) / 1000);
    result.changeServedS = { median: quantile(served, 0.5)!, max: Math.max(...served) };
    result.probeP99Ms = quantile(waits, 0.99);
    result.probeMaxMs = Math.max(...waits);
    await sleep(3000);
    result.rssAfterReloadsMB = rssMB(gw.proc.pid);

    log(`[${routes}] traffic over every route, ${SCRAPES} scrapes`);
    await touchEveryRoute(gw, routes);
    const scrapeProbe = new Probe(`${gw.base}${scaleRequest(1).path}`);
    let worst: { seconds: number; bytes: number; pauseMs: number } | undefined;
    for (let k = 0; k < SCRAPES; k++) {
      await sleep(300);
      const from = performance.now();
      const s = await scrapeOnce(gw);
      const pauseMs = Math.max(0, ...scrapeProbe.between(from, performance.now()).map((p) => p.ms));
      if (worst === undefined || s.seconds > worst.seconds)
        worst = { ...s, pauseMs: Math.max(pauseMs, worst?.pauseMs ?? 0) };
      else worst.pauseMs = Math.max(worst.pauseMs, pauseMs);
    }
    await scrapeProbe.stop();
    result.scrape = worst;
    result.rssAfterScrapesMB = rssMB(gw.proc.pid);

    if (routes === LONG_SIZE) {
      log(`[${routes}] ${LONG_RELOADS} reloads for memory`);
      let rssAt20 = 0;
      for (let k = RELOADS + 1; k <= RELOADS + LONG_RELOADS; k++) {
        await reloadOnce(gw, write, k);
        if (k - RELOADS === 20) {
          await sleep(3000);
          rssAt20 = rssMB(gw.proc.pid) ?? 0;
        }
      }
      await sleep(3000);
      result.long = { reloads: LONG_RELOADS, rssAt20MB: rssAt20, rssAtEndMB: rssMB(gw.proc.pid) ?? 0 };
    }
  } finally {
    await gw.proc.stop();
  }
  return result;
}

function mark(ok: boolean | undefined): string {
  return ok === undefined ? '' : ok ? ' PASS' : ' MISS';
}

function report(results: readonly SizeResult[]): string {
  const g = (r: SizeResult, ok: boolean) => (r.routes === GOAL_SIZE ? mark(ok) : '');
  const rows = results.map((r) => {
    if (r.error) return [fmtInt(r.routes), `error: ${r.error}`];
    return [
      fmtInt(r.routes),
      `${fmtInt(r.hosts)} / ${fmtInt(r.upstreams)}`,
      `${fmtNum(r.validateS)} s${g(r, (r.validateS ?? Infinity) <= GOALS.validateS)}`,
      `${fmtNum(r.readyS)} s${g(r, (r.readyS ?? Infinity) <= GOALS.readyS)}`,
      `${fmtInt(r.idleRssMB)} MB${g(r, (r.idleRssMB ?? Infinity) <= GOALS.idleRssMB)}`,
      `${fmtNum(r.changeServedS?.median)} s (max ${fmtNum(r.changeServedS?.max)})${g(r, (r.changeServedS?.max ?? Infinity) <= GOALS.changeServedS)}`,
      `${fmtMs(r.probeP99Ms)} / ${fmtMs(r.probeMaxMs)} ms${g(r, (r.probeP99Ms ?? Infinity) <= GOALS.probeP99Ms)}`,
      `${fmtInt(r.rssAfterReloadsMB)} MB`,
      `${fmtNum(r.scrape?.seconds)} s, ${fmtNum((r.scrape?.bytes ?? Number.NaN) / 1e6, 1)} MB${g(r, (r.scrape?.seconds ?? Infinity) <= GOALS.scrapeS)}`,
      `${fmtMs(r.scrape?.pauseMs)} ms${g(r, (r.scrape?.pauseMs ?? Infinity) <= GOALS.scrapePauseMs)}`,
      `${fmtInt(r.rssAfterScrapesMB)} MB`,
      `${fmtInt(r.matchNs)} ns (${fmtNum(r.matchRatio)}×)${g(r, (r.matchRatio ?? 0) >= GOALS.matchRatio)}`,
      `${fmtInt(r.matchSpreadNs)} ns`,
      `${fmtMs(r.baselineP99Ms)} / ${fmtMs(r.baselineMaxMs)} ms`,
    ];
  });
  const table = markdownTable(
    [
      'routes',
      'hosts / upstreams',
      'validate',
      'start → ready',
      'idle RSS',
      `reload: change served (median)`,
      `probe wait during ${RELOADS} reloads: p99 / max`,
      `RSS after ${RELOADS} reloads`,
      'scrape: time, size',
      'scrape: probe wait',
      'RSS after traffic and scrapes',
      "route match: 10 routes' requests (throughput vs 10 routes)",
      'route match: spread over all',
      'probe wait, idle: p99 / max',
    ],
    rows,
  );
  const long = results.find((r) => r.long);
  const flat = long?.long
    ? `\n\nMemory over ${long.long.reloads} more reloads at ${fmtInt(long.routes)} routes: RSS ${fmtInt(long.long.rssAt20MB)} MB after 20, ${fmtInt(long.long.rssAtEndMB)} MB after ${long.long.reloads}${mark(long.long.rssAtEndMB <= GOALS.flatGrowth * long.long.rssAt20MB)} (flat: at most ${Math.round((GOALS.flatGrowth - 1) * 100)}% growth).`
    : '';
  return `${table}${flat}\n\nGoals (at ${fmtInt(GOAL_SIZE)} routes): validate ≤ ${GOALS.validateS} s, start → ready ≤ ${GOALS.readyS} s, idle RSS ≤ ${GOALS.idleRssMB} MB, change served ≤ ${GOALS.changeServedS} s and probe p99 ≤ ${GOALS.probeP99Ms} ms during reloads, scrape ≤ ${GOALS.scrapeS} s with probe wait ≤ ${GOALS.scrapePauseMs} ms, route matching ≥ ${GOALS.matchRatio}× the 10-route throughput.\n`;
}

async function main(): Promise<void> {
  installCleanup(log);
  const dir = mkdtempSync(join(tmpdir(), 'peregrine-scale-'));
  const results: SizeResult[] = [];
  try {
    const upstream = await startPeer({ node: process.execPath, root: ROOT }, 'upstream.ts');
    await waitForHttp(`${upstream.origin}/`, { proc: upstream.proc });
    for (const routes of SIZES) {
      let r: SizeResult;
      try {
        r = await measureSize(routes, dir, upstream.origin);
      } catch (err) {
        r = {
          routes,
          hosts: scaleHosts(routes),
          upstreams: scaleUpstreams(routes),
          error: (err as Error).message,
        };
        log(`[${routes}] ${(err as Error).stack}`);
      }
      log(`[${routes}] route matching`);
      const match = await matchAgainstTen(routes);
      r.matchNs = match.ns;
      r.matchRatio = match.tenNs / match.ns;
      r.matchSpreadNs = await matchCostApart(routes, true);
      results.push(r);
      log(JSON.stringify(r));
    }
  } finally {
    await stopAll();
    if (process.env.BENCH_KEEP_TMP !== '1') rmSync(dir, { recursive: true, force: true });
  }
  const out = join(ROOT, 'bench/results');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, `scale-${fileStamp()}.json`), `${JSON.stringify({ results }, null, 2)}\n`);
  process.stdout.write(report(results));
}

if (import.meta.main) {
  if (process.argv[2] === 'match')
    process.stdout.write(`${matchCost(Number(process.argv[3]), process.argv[4] === 'spread')}\n`);
  else await main();
}
