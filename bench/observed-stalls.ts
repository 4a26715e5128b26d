/**
 * Where the observed gateway's long event-loop turns come from: the observed profile (access log,
 * OTLP export at 10%) under a fixed moderate rate (bench/lib/paced.ts, well below saturation, so a
 * shared machine is not saturated), run with `--trace-gc` and a fine-grained `--cpu-prof`.
 * Reports the longest turns and how many exceed 5 ms (busy runs of the CPU profile, each
 * attributed to what it spent most on: the GC, the span export, the access log, ...), the GC
 * pauses from V8's trace (main-thread pause per collection, by kind), the gateway's own
 * `nodejs_eventloop_delay_seconds` (sampled every 1 ms for this probe) and the maximum RSS.
 *
 *   node bench/observed-stalls.ts [rate=3000] [seconds=20] [--node-arg=--flag ...]
 *   (OTEL_* in the environment reach the gateway)
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import type { CpuProfile } from './lib/cpuprofile.ts';
import { groupOf, moduleOf } from './lib/cpuprofile.ts';
import { peregrineArgv, peregrineEnv } from './lib/launcher.ts';
import { PacedLoad } from './lib/paced.ts';
import { peregrineConfigYaml } from './lib/peregrine-config.ts';
import { quantile } from './lib/probe.ts';
import { freePort, httpGet, installCleanup, runMain, stopAll, waitForHttp } from './lib/proc.ts';
import { RssSampler } from './lib/rss.ts';
import { childEnv, startUpstreamAndSink } from './lib/targets.ts';

const ROOT = join(import.meta.dirname, '..');
const log = (s: string): void => void process.stderr.write(`${s}\n`);
const LONG_MS = 5;
const WARMUP_S = 5;
const EXPORT_CAUSE = 'span export (serialise/send)';

interface Turn {
  startUs: number;
  ms: number;
  /** Busy time by cause, µs. */
  causes: Map<string, number>;
}

/** What a sample's stack is doing, by its frames from the leaf up. */
function causeOf(frames: readonly { functionName: string; url: string }[]): string {
  const leaf = frames[0];
  if (leaf?.functionName === '(garbage collector)') return 'GC';
  for (const f of frames) {
    const u = f.url;
    if (
      u.includes('otlp-transformer') ||
      u.includes('otlp-exporter-base') ||
      u.includes('exporter-trace-otlp')
    )
      return EXPORT_CAUSE;
    if (u.includes('sdk-trace-base') && /BatchSpanProcessor/.test(f.functionName))
      return 'span batch processor';
    if (u.includes('access-log') || u.includes('log-destination') || u.includes('sonic-boom'))
      return 'access log';
    if (u.includes('prom-client') || u.includes('runtime-metrics') || u.includes('exposition'))
      return 'metrics';
  }
  const m = leaf
    ? leaf.functionName.startsWith('(') && !leaf.url
      ? leaf.functionName
      : moduleOf(leaf.url, ROOT)
    : '?';
  const g = groupOf(m);
  return g.startsWith('native') ? `native ${leaf?.functionName || '?'}` : g;
}

/**
 * Busy runs of the profile (consecutive non-idle samples) inside [fromUs, toUs]. A run can hold
 * several turns (with work pending, the loop polls without waiting, so no idle sample falls
 * between them); `segments` gets the unbroken stretches of span export (ms): with nothing else
 * between its samples, no request was served meanwhile.
 */
function busyRuns(p: CpuProfile, fromUs: number, toUs: number, segments: number[]): Turn[] {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const stackCause = new Map<number, string>();
  const causeFor = (id: number): string => {
    let c = stackCause.get(id);
    if (c !== undefined) return c;
    const frames: { functionName: string; url: string }[] = [];
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const n = byId.get(at);
      if (n) frames.push(n.callFrame);
    }
    c = causeOf(frames);
    stackCause.set(id, c);
    return c;
  };
  const runs: Turn[] = [];
  segments.length = 0;
  let segment = 0;
  const endSegment = (): void => {
    if (segment > 0) segments.push(segment / 1000);
    segment = 0;
  };
  let cur: Turn | undefined;
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    const dur = p.timeDeltas[i + 1] ?? 0;
    if (t < fromUs || t > toUs) continue;
    const id = p.samples[i]!;
    const name = byId.get(id)?.callFrame.functionName;
    if (name === '(idle)') {
      endSegment();
      if (cur) runs.push(cur);
      cur = undefined;
      continue;
    }
    cur ??= { startUs: t, ms: 0, causes: new Map() };
    cur.ms += dur / 1000;
    const c = causeFor(id);
    cur.causes.set(c, (cur.causes.get(c) ?? 0) + dur);
    // A GC inside the serialisation belongs to it; anything else ends the stretch.
    if (c === EXPORT_CAUSE || (c === 'GC' && segment > 0)) segment += dur;
    else endSegment();
  }
  endSegment();
  if (cur) runs.push(cur);
  return runs;
}

interface GcPause {
  kind: string;
  ms: number;
}

/** Main-thread pauses from `--trace-gc` lines (`…: Scavenge 30.1 (33.2) -> 28.0 (34.2) MB, pooled: 0.0 MB, 1.23 / 0.00 ms …`). */
function gcPauses(text: string): GcPause[] {
  const out: GcPause[] = [];
  for (const m of text.matchAll(
    /ms: (Scavenge|Mark-Compact|Mark-Compact \(reduce\)|Minor Mark-Sweep)[^\n]*?MB, (?:pooled: [\d.]+ MB, )?([\d.]+) \/ [\d.]+ ms/g,
  ))
    out.push({ kind: m[1]!, ms: Number(m[2]) });
  return out;
}

function delayBuckets(metrics: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of metrics.matchAll(/^(?:\w+_)?nodejs_eventloop_delay_seconds_bucket\{le="([^"]+)"\} (\d+)/gm))
    out.set(m[1]!, Number(m[2]));
  return out;
}

async function main(): Promise<void> {
  installCleanup(log);
  const positional = process.argv.slice(2).filter((a) => !a.startsWith('--node-arg='));
  const extraArgs = process.argv
    .slice(2)
    .filter((a) => a.startsWith('--node-arg='))
    .map((a) => a.slice(11));
  const rate = Number(positional[0] ?? 3000);
  const seconds = Number(positional[1] ?? 20);
  const tmp = mkdtempSync(join(tmpdir(), 'peregrine-stalls-'));
  let gateway: ChildProcess | undefined;
  try {
    const { upstream, otlp } = await startUpstreamAndSink({ node: process.execPath, root: ROOT }, true);
    const [listenPort, adminPort] = [await freePort(), await freePort()];
    const config = parse(
      peregrineConfigYaml({
        profile: 'observed',
        listenPort,
        adminPort,
        upstreamOrigin: upstream,
        otlpEndpoint: otlp,
      }),
    );
    config.telemetry.metrics = { ...config.telemetry.metrics, eventLoopResolution: '1ms' };
    const configFile = join(tmp, 'peregrine.yaml');
    writeFileSync(configFile, stringify(config));
    const profDir = join(tmp, 'prof');
    const outFile = join(tmp, 'stdout');
    const out = openSync(outFile, 'w');
    const env: NodeJS.ProcessEnv = childEnv();
    for (const [k, v] of Object.entries(process.env)) if (k.startsWith('OTEL_')) env[k] = v;
    const child = spawn(
      process.execPath,
      [
        '--trace-gc',
        '--cpu-prof',
        `--cpu-prof-dir=${profDir}`,
        '--cpu-prof-interval=250',
        ...extraArgs,
        ...peregrineArgv(ROOT),
        'run',
        '--config',
        configFile,
      ],
      { env: peregrineEnv(ROOT, env), cwd: ROOT, stdio: ['ignore', out, 'inherit'] },
    );
    gateway = child;
    const admin = `http://127.0.0.1:${adminPort}`;
    await waitForHttp(`${admin}/readyz`, { timeoutMs: 20_000 });
    const url = `http://127.0.0.1:${listenPort}/`;
    const load = new PacedLoad(url, 64);
    await load.run(rate, WARMUP_S);
    const before = delayBuckets((await httpGet(`${admin}/metrics`)).body);
    const gcBefore = gcPauses(readFileSync(outFile, 'latin1')).length;
    const rss = new RssSampler(child.pid!, 100);
    const fromUs = Number(process.hrtime.bigint() / 1000n);
    const r = await load.run(rate, seconds);
    const toUs = Number(process.hrtime.bigint() / 1000n);
    const { maxMB } = rss.stop();
    const after = delayBuckets((await httpGet(`${admin}/metrics`)).body);
    await load.close();
    const exited = new Promise((res) => child.once('exit', res));
    child.kill('SIGTERM');
    await exited;

    const gcText = readFileSync(outFile, 'latin1');
    const gc = gcPauses(gcText).slice(gcBefore);
    if (process.env.STALLS_GC_LINES)
      for (const l of gcText.split('\n'))
        if (/Mark-Compact|Scavenge.*, [5-9]\.\d+ \/|Scavenge.*, \d\d\.\d+ \//.test(l)) log(l);
    const prof = JSON.parse(readFileSync(join(profDir, readdirSync(profDir)[0]!), 'utf8')) as CpuProfile;
    const segments: number[] = [];
    const runs = busyRuns(prof, fromUs, toUs, segments);
    const long = runs.filter((t) => t.ms > LONG_MS).sort((a, b) => b.ms - a.ms);
    const lat = [...r.intendedLatenciesMs].sort((a, b) => a - b);
    const lines: string[] = [];
    lines.push(
      `rate ${rate}/s for ${seconds} s: sent ${r.sent}, p50 ${quantile(lat, 0.5)?.toFixed(2)} ms, p99 ${quantile(lat, 0.99)?.toFixed(2)} ms, max ${lat.at(-1)?.toFixed(1)} ms; max RSS ${maxMB?.toFixed(1)} MB`,
    );
    lines.push(
      `busy runs (profile; one run can hold several turns): ${runs.length}, > ${LONG_MS} ms: ${long.length}, longest: ${long
        .slice(0, 8)
        .map((t) => t.ms.toFixed(1))
        .join(', ')}`,
    );
    const byCause = new Map<string, { n: number; ms: number }>();
    for (const t of long) {
      const top = [...t.causes.entries()].sort((a, b) => b[1] - a[1])[0]![0];
      const e = byCause.get(top) ?? { n: 0, ms: 0 };
      e.n++;
      e.ms += t.ms;
      byCause.set(top, e);
    }
    lines.push(
      `long turns by their largest part: ${[...byCause.entries()].map(([c, e]) => `${c} ${e.n} (${e.ms.toFixed(0)} ms)`).join('; ')}`,
    );
    const stretches = segments.filter((ms) => ms >= 0.5).sort((a, b) => b - a);
    lines.push(
      `unbroken span export stretches >= 0.5 ms: ${stretches.length}, median ${quantile(stretches, 0.5)?.toFixed(2)} ms, longest ${stretches
        .slice(0, 6)
        .map((ms) => ms.toFixed(1))
        .join(
          ', ',
        )}; > ${LONG_MS} ms: ${stretches.filter((ms) => ms > LONG_MS).length}; total ${stretches.reduce((a, b) => a + b, 0).toFixed(0)} ms`,
    );
    for (const t of long.slice(0, 6)) {
      const parts = [...t.causes.entries()].sort((a, b) => b[1] - a[1]).slice(0, 4);
      lines.push(
        `  ${t.ms.toFixed(1)} ms: ${parts.map(([c, us]) => `${c} ${(us / 1000).toFixed(1)}`).join(', ')}`,
      );
    }
    const kinds = new Map<string, { n: number; ms: number; max: number; over5: number }>();
    for (const g of gc) {
      const e = kinds.get(g.kind) ?? { n: 0, ms: 0, max: 0, over5: 0 };
      e.n++;
      e.ms += g.ms;
      e.max = Math.max(e.max, g.ms);
      if (g.ms > LONG_MS) e.over5++;
      kinds.set(g.kind, e);
    }
    lines.push(
      `GC pauses: ${[...kinds.entries()].map(([k, e]) => `${k} ${e.n}× total ${e.ms.toFixed(0)} ms, max ${e.max.toFixed(1)}, > ${LONG_MS} ms: ${e.over5}`).join('; ')}`,
    );
    const delta = [...after.entries()].map(([le, n]) => [le, n - (before.get(le) ?? 0)] as const);
    const total = delta.at(-1)?.[1] ?? 0;
    const atMost5 = delta.find(([le]) => le === '0.005')?.[1] ?? 0;
    const atMost10 = delta.find(([le]) => le === '0.01')?.[1] ?? 0;
    const atMost25 = delta.find(([le]) => le === '0.025')?.[1] ?? 0;
    lines.push(
      `nodejs_eventloop_delay_seconds (1 ms ticks): ${total} samples, > 5 ms ${total - atMost5}, > 10 ms ${total - atMost10}, > 25 ms ${total - atMost25}`,
    );
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    if (gateway !== undefined && gateway.exitCode === null && gateway.signalCode === null)
      gateway.kill('SIGKILL');
    await stopAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

runMain('observed-stalls', main);
