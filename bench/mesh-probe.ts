/**
 * A short latency probe of one mesh hop, well below saturation: the mesh of bench/lib/mesh.ts
 * (registry, inbound sidecar in front of the bench upstream, outbound sidecar) and the
 * passthrough gateway, each loaded in turn at a fixed rate (bench/lib/paced.ts), with the spread
 * of the latencies in buckets, so mechanisms show (a cluster at 40 ms is Nagle's algorithm meeting
 * a delayed ACK), and the TLS handshakes the hop made meanwhile. Not a benchmark: it sets no goal, and it is light enough for a shared machine.
 *
 *   node bench/mesh-probe.ts                # 500 req/s, 10 s each, 16 connections
 *   PROBE_RATE=1000 PROBE_DURATION=20 PROBE_CONNECTIONS=16 node bench/mesh-probe.ts
 *
 * PROBE_PIN=1 pins as BENCH_PIN=1 does (the gateways on the last CPU, the probe and the upstream on
 * the others). Each gateway's own count of slow answers (its request-duration histogram) is shown
 * beside the client's, to tell time spent inside a gateway from time before it read the request.
 * PROBE_SLICE=1 loads the two paths in turns of 1 s slices, as the benchmark's latency group does
 * (bench/lib/paced-turns.ts), and reports the p99 of each slice's first 100 ms apart from the rest.
 * Requests slower than PROBE_SLOW_MS (20) are grouped into episodes (requests in flight together),
 * printed with their wall-clock times, to line them up with what the gateways did then (their
 * logs, `strace -tt -p`): a stall of one process holds every request in flight at once.
 *
 * PROBE_WARMUP_REQUESTS (0) first sends that many requests to each path, 16 at a time at
 * PROBE_WARMUP_RATE (2000) req/s, so that the probe sees the gateways after V8 has compiled their hot
 * code (about 25,000 requests; docs/decisions.md), not while it still does.
 *
 * BENCH_PEREGRINE_DIR runs the gateways from another checkout (as bench/run.ts does).
 */
import { readFileSync } from 'node:fs';
import { intFromEnv } from './lib/env.ts';
import { countsBetween, meshCounts, withStandaloneMesh } from './lib/mesh.ts';
import { PacedLoad, pacedFailures } from './lib/paced.ts';
import { sliceOrder } from './lib/paced-turns.ts';
import { pinPlan, pinSelf } from './lib/pin.ts';
import { runMain } from './lib/proc.ts';
import { metricSum, scrapeMetrics } from './lib/prom.ts';
import { summariseLatencies } from './lib/stats.ts';

/** With PROBE_SLICE: requests sent this soon after a slice starts are reported apart. */
const SLICE_START_MS = 100;
/** Upper bounds of the buckets, ms; the last bucket is everything above. */
const BUCKETS_MS = [1, 2, 5, 10, 20, 35, 45, 80, 120] as const;

/** A stretch of time in which requests were slow: they overlap, so one cause probably held them. */
interface Episode {
  /** When its first slow request was sent, ms from the run's start. */
  startMs: number;
  endMs: number;
  requests: number;
  worstMs: number;
}

/**
 * The slow requests (above `slowMs`) grouped into episodes: a request sent before the previous
 * one's answer came joins its episode. One stalled process or connection shows as one episode of
 * many requests; a per-request cost as many episodes of one.
 */
export function slowEpisodes(
  startsMs: readonly number[],
  latenciesMs: readonly number[],
  slowMs: number,
): Episode[] {
  const slow = startsMs
    .map((start, i) => ({ start, latency: latenciesMs[i]! }))
    .filter((r) => r.latency > slowMs)
    .sort((a, b) => a.start - b.start);
  const episodes: Episode[] = [];
  for (const r of slow) {
    const last = episodes.at(-1);
    if (last && r.start <= last.endMs) {
      last.endMs = Math.max(last.endMs, r.start + r.latency);
      last.requests++;
      last.worstMs = Math.max(last.worstMs, r.latency);
    } else episodes.push({ startMs: r.start, endMs: r.start + r.latency, requests: 1, worstMs: r.latency });
  }
  return episodes;
}

function describeEpisodes(episodes: readonly Episode[], startedAtMs: number): string {
  if (episodes.length === 0) return '  no slow requests';
  const gaps = episodes.slice(1).map((e, i) => e.startMs - episodes[i]!.startMs);
  const clock = (ms: number) => new Date(startedAtMs + ms).toISOString().slice(11, 23);
  const lines = episodes
    .slice(0, 30)
    .map(
      (e) =>
        `    ${clock(e.startMs)} (+${(e.startMs / 1000).toFixed(3)} s): ${e.requests} slow, ` +
        `worst ${e.worstMs.toFixed(1)} ms, over ${(e.endMs - e.startMs).toFixed(1)} ms`,
    );
  return (
    `  ${episodes.length} slow episode(s)` +
    (gaps.length ? `; ms between their starts: ${gaps.map((g) => g.toFixed(0)).join(' ')}` : '') +
    `\n${lines.join('\n')}${episodes.length > 30 ? '\n    …' : ''}`
  );
}

/**
 * Requests a gateway answered, and how many took it over 25 and 50 ms, by its own histogram; and
 * its main thread's time on the CPU and waiting for it on the run queue (/proc/…/schedstat, ns):
 * time a request spends runnable but not running shows in the second, not in the histogram.
 */
interface SeenSlow {
  count: number;
  over25: number;
  over50: number;
  runNs: number;
  waitNs: number;
  /** Garbage collections by kind (major, minor, incremental, weakcb) and their seconds. */
  gcs: Record<string, number>;
  gcSeconds: number;
}

const GC_KINDS = ['minor', 'major', 'incremental'] as const;

async function seenSlow(g: { admin: string; pid: number }): Promise<SeenSlow> {
  const m = await scrapeMetrics(g.admin);
  const bucket = (le: string) => metricSum(m, 'peregrine_request_duration_seconds_bucket', { le });
  const count = metricSum(m, 'peregrine_request_duration_seconds_count');
  const [runNs, waitNs] = readFileSync(`/proc/${g.pid}/task/${g.pid}/schedstat`, 'utf8')
    .split(' ')
    .map(Number);
  const gcs: Record<string, number> = {};
  for (const kind of GC_KINDS)
    gcs[kind] = metricSum(m, 'peregrine_nodejs_gc_duration_seconds_count', { kind });
  return {
    count,
    over25: count - bucket('0.025'),
    over50: count - bucket('0.05'),
    runNs: runNs!,
    waitNs: waitNs!,
    gcs,
    gcSeconds: metricSum(m, 'peregrine_nodejs_gc_duration_seconds_sum'),
  };
}

function describeSeen(name: string, before: SeenSlow, after: SeenSlow): string {
  const n = after.count - before.count;
  const perReq = (ns: number) => (n > 0 ? (ns / n / 1000).toFixed(1) : '-');
  return (
    `  ${name} saw ${n} requests, ${after.over25 - before.over25} over 25 ms, ` +
    `${after.over50 - before.over50} over 50 ms (its own peregrine_request_duration_seconds); main thread ` +
    `on the CPU ${perReq(after.runNs - before.runNs)} µs/req, waiting on the run queue ${perReq(after.waitNs - before.waitNs)} µs/req; ` +
    `GCs ${GC_KINDS.map((k) => `${k} ${after.gcs[k]! - before.gcs[k]!}`).join(', ')}, ` +
    `${((after.gcSeconds - before.gcSeconds) * 1000).toFixed(1)} ms in all`
  );
}

function buckets(latencies: readonly number[]): string {
  const counts = new Array<number>(BUCKETS_MS.length + 1).fill(0);
  for (const ms of latencies) {
    const i = BUCKETS_MS.findIndex((b) => ms <= b);
    counts[i === -1 ? BUCKETS_MS.length : i]!++;
  }
  const labels = [...BUCKETS_MS.map((b) => `≤${b}`), `>${BUCKETS_MS.at(-1)}`];
  return labels.map((l, i) => `${l}: ${counts[i]}`).join('  ');
}

async function main(): Promise<void> {
  const rate = intFromEnv('PROBE_RATE', 500);
  const durationS = intFromEnv('PROBE_DURATION', 10);
  const connections = intFromEnv('PROBE_CONNECTIONS', 16);
  const slowMs = intFromEnv('PROBE_SLOW_MS', 20);
  const sliceS = intFromEnv('PROBE_SLICE', durationS);
  const warmupRequests = intFromEnv('PROBE_WARMUP_REQUESTS', 0);
  const warmupRate = intFromEnv('PROBE_WARMUP_RATE', 2000);
  // As the benchmark pins (bench/lib/pin.ts): the gateways on the last CPU, the rest on the others.
  const pin = pinPlan({ BENCH_PIN: process.env.PROBE_PIN });
  if (pin) pinSelf(pin);
  await withStandaloneMesh('mesh-probe', pin, async (mesh) => {
    const paths = [
      {
        id: 'passthrough',
        url: `${mesh.passthrough!.url}`,
        headers: undefined,
        gateways: { passthrough: mesh.passthrough! },
      },
      {
        id: 'mesh',
        url: mesh.url,
        headers: mesh.headers,
        gateways: { outbound: mesh.outbound, inbound: mesh.inbound },
      },
    ];
    const loads = paths.map((p) => ({
      p,
      load: new PacedLoad(p.url, connections),
      gateways: Object.entries(p.gateways),
      latenciesMs: [] as number[],
      /** Epoch ms each answered request was sent, and ms into its slice. */
      atMs: [] as number[],
      inSliceMs: [] as number[],
      failed: 0,
      sent: 0,
      seenBefore: [] as SeenSlow[],
      countsBefore: undefined as Awaited<ReturnType<typeof meshCounts>> | undefined,
    }));
    try {
      for (const l of loads) {
        if (warmupRequests > 0) await l.load.run(warmupRate, warmupRequests / warmupRate, l.p.headers, 16);
        await l.load.run(rate, 2, l.p.headers); // warmup at the probe's rate
      }
      for (const l of loads) {
        l.seenBefore = await Promise.all(
          l.gateways.map(([, g]) => seenSlow({ admin: g.admin, pid: g.proc.pid })),
        );
        if (l.p.id === 'mesh') l.countsBefore = await meshCounts(mesh);
      }
      const turns = Math.ceil(durationS / sliceS);
      for (let turn = 0; turn < turns; turn++) {
        for (const l of sliceOrder(loads, turn)) {
          const r = await l.load.run(rate, sliceS, l.p.headers);
          l.latenciesMs.push(...r.latenciesMs);
          for (const ms of r.startsMs) {
            l.atMs.push(r.startedAtMs + ms);
            l.inSliceMs.push(ms);
          }
          l.failed += pacedFailures(r);
          l.sent += r.sent;
        }
      }
      for (const l of loads) {
        const seenAfter = await Promise.all(
          l.gateways.map(([, g]) => seenSlow({ admin: g.admin, pid: g.proc.pid })),
        );
        const hs = l.countsBefore && countsBetween(l.countsBefore, await meshCounts(mesh));
        const s = summariseLatencies(l.latenciesMs);
        const fmt = (n: number | undefined) => (n === undefined ? '-' : n.toFixed(2));
        const early = l.latenciesMs.filter((_, i) => l.inSliceMs[i]! < SLICE_START_MS);
        const late = l.latenciesMs.filter((_, i) => l.inSliceMs[i]! >= SLICE_START_MS);
        const p99 = (xs: number[]) => fmt(summariseLatencies(xs)?.p99);
        const t0 = Math.min(...l.atMs);
        process.stdout.write(
          `${l.p.id}: ${l.latenciesMs.length} answers of ${l.sent} at ${rate} req/s, failed ${l.failed}; ` +
            `p50 ${fmt(s?.p50)} p99 ${fmt(s?.p99)} max ${fmt(s?.max)} ms` +
            (hs
              ? `; handshakes between the sidecars ${hs.handshakesNew} new, ${hs.handshakesResumed} resumed`
              : '') +
            (turns > 1
              ? `\n  ${sliceS} s slices in turns: p99 of the first ${SLICE_START_MS} ms of each slice ${p99(early)} ms (${early.length} requests), of the rest ${p99(late)} ms`
              : '') +
            `\n  ${buckets(l.latenciesMs)}\n` +
            `${l.gateways.map(([name], i) => describeSeen(name, l.seenBefore[i]!, seenAfter[i]!)).join('\n')}\n` +
            `${describeEpisodes(
              slowEpisodes(
                l.atMs.map((at) => at - t0),
                l.latenciesMs,
                slowMs,
              ),
              t0,
            )}\n`,
        );
      }
    } finally {
      for (const l of loads) await l.load.close();
    }
  });
}

if (import.meta.main) runMain('mesh-probe', main);
