/**
 * CPU per request of each sidecar of a mesh hop against a passthrough gateway, side by side: the
 * passthrough gateway and both sidecars run at the same time (on the target CPU with BENCH_PIN=1),
 * passthrough loaded by one wrk and the mesh hop (client → outbound → inbound → upstream) by
 * another, and each process's CPU is read from /proc over the same seconds. Side by side rather
 * than one after the other because on these shared VMs sequential runs of one config drift by
 * 20-40% while a side-by-side ratio repeats within about ±5% (docs/benchmarks.md). Also the TLS
 * handshakes between the sidecars per 1,000 requests, from both sidecars' own counters, and the
 * largest RSS under load. Goal (issue 16): each sidecar ≤ 1.2× passthrough's CPU per request;
 * handshakes amortised.
 */
import { machineCpuWindow, waitForQuiet } from './cpu.ts';
import { intFromEnv } from './env.ts';
import { type Group, type GroupResult, log, sleep } from './feature-bench.ts';
import { goal, info } from './goals.ts';
import { FOREIGN_PCT } from './measure.ts';
import {
  countsBetween,
  handshakesPer1000,
  type MeshCounts,
  meshCertsFor,
  meshCounts,
  startMesh,
} from './mesh.ts';
import { findExecutable } from './proc.ts';
import { RssSampler } from './rss.ts';
import { median, sideBySideRound } from './side-by-side-round.ts';
import { fmtInt, fmtNum, markdownTable } from './table.ts';

export const SIDECAR_CPU_GOAL = 1.2;
/** Steady state: a connection between the sidecars carries at least 1,000 requests. */
export const HANDSHAKES_PER_1000_GOAL = 1;
const SETTLE_MS = 1000;

export interface MeshCpuRound {
  round: number;
  /** CPU µs per request. */
  passthroughUs: number;
  outboundUs: number;
  inboundUs: number;
  passthroughRps: number;
  meshRps: number;
  /** Counted by the sidecars over the measured seconds, and from start to the end of the round. */
  window: MeshCounts;
  total: MeshCounts;
  maxRssMB: { passthrough?: number; outbound?: number; inbound?: number };
  foreignPct: number | undefined;
}

const ratio = (rows: readonly MeshCpuRound[], f: (r: MeshCpuRound) => number) =>
  rows.length ? median(rows.map(f)) : undefined;

export const meshCpuGroup: Group = {
  id: 'cpu',
  title: 'CPU per request: each sidecar against passthrough, side by side',
  async run({ ctx, settings }) {
    const wrk = findExecutable('wrk', ['/usr/local/bin', '/usr/bin']);
    if (!wrk) throw new Error('the side-by-side measurement needs wrk (apt-get install wrk)');
    const rounds = intFromEnv('BENCH_MESH_ROUNDS', 3);
    const connections = Math.max(1, Math.round(settings.connections / 2));
    const certs = await meshCertsFor(ctx);
    const rows: MeshCpuRound[] = [];
    for (let round = 1; round <= rounds; round++) {
      const shared = () => [ctx.upstream.proc.pid, ctx.otlp.proc.pid];
      await waitForQuiet(shared, FOREIGN_PCT, settings.quietWaitS * 1000);
      const mesh = await startMesh(ctx, certs);
      try {
        const pass = mesh.passthrough!;
        const samplers = {
          passthrough: new RssSampler(pass.proc.pid),
          outbound: new RssSampler(mesh.outbound.proc.pid),
          inbound: new RssSampler(mesh.inbound.proc.pid),
        };
        // Read 1 s into the measured seconds: when the warmup's wrk stopped, the requests it had in
        // flight were aborted and their connections to the inbound sidecar closed with them (as a
        // client going away should); the pool opens them again as the measured load starts.
        let settled: Promise<MeshCounts> | undefined;
        const machine = machineCpuWindow(() => [...shared(), ...mesh.pids, mesh.registry.proc.pid]);
        const r = await sideBySideRound(
          wrk,
          { proc: pass.proc, url: pass.url },
          {
            proc: mesh.outbound.proc,
            url: mesh.url,
            headers: mesh.headers,
            cpuOf: [mesh.outbound.proc, mesh.inbound.proc],
          },
          {
            warmupS: settings.warmupS,
            durationS: settings.durationS,
            connections,
            afterWarmup: async () => {
              settled = sleep(SETTLE_MS).then(() => meshCounts(mesh));
            },
          },
        );
        const foreignPct = machine()?.foreignPct;
        const total = await meshCounts(mesh);
        const rss = (s: RssSampler) => s.stop().maxMB;
        const row: MeshCpuRound = {
          round,
          passthroughUs: r.usA,
          outboundUs: r.perProcB[0]!,
          inboundUs: r.perProcB[1]!,
          passthroughRps: r.a.rps,
          meshRps: r.b.rps,
          window: countsBetween(await settled!, total),
          total,
          maxRssMB: {
            passthrough: rss(samplers.passthrough),
            outbound: rss(samplers.outbound),
            inbound: rss(samplers.inbound),
          },
          foreignPct,
        };
        rows.push(row);
        log(
          `cpu round ${round}: passthrough ${fmtNum(row.passthroughUs, 1)} µs/req, outbound ${fmtNum(row.outboundUs, 1)}, ` +
            `inbound ${fmtNum(row.inboundUs, 1)}; handshakes ${row.total.handshakesNew}+${row.total.handshakesResumed} ` +
            `over ${fmtInt(row.total.requests)} requests; other processes ${fmtNum(foreignPct, 0)}%`,
        );
      } finally {
        await mesh.stop();
      }
    }
    const result = present(rows, connections, settings);
    if (!ctx.pin)
      result.notes?.push(
        'cpu: not pinned (BENCH_PIN unset): the sidecars and passthrough shared both CPUs with wrk and the upstream, so the ratios are less steady; use BENCH_PIN=1 for the goals.',
      );
    return result;
  },
};

function present(
  rows: MeshCpuRound[],
  connections: number,
  settings: { warmupS: number; durationS: number },
): GroupResult {
  const table = markdownTable(
    [
      'round',
      'passthrough µs/req',
      'outbound µs/req',
      'inbound µs/req',
      'outbound ×',
      'inbound ×',
      'hop ×',
      'passthrough req/s',
      'mesh req/s',
      'handshakes (steady)',
      'handshakes (from start)',
      'requests (from start)',
      'other processes %',
    ],
    rows.map((r) => [
      String(r.round),
      fmtNum(r.passthroughUs, 1),
      fmtNum(r.outboundUs, 1),
      fmtNum(r.inboundUs, 1),
      fmtNum(r.outboundUs / r.passthroughUs, 2),
      fmtNum(r.inboundUs / r.passthroughUs, 2),
      fmtNum((r.outboundUs + r.inboundUs) / r.passthroughUs, 2),
      fmtInt(r.passthroughRps),
      fmtInt(r.meshRps),
      `${r.window.handshakesNew + r.window.handshakesResumed}`,
      `${r.total.handshakesNew} new + ${r.total.handshakesResumed} resumed (inbound: ${r.total.inboundHandshakes})`,
      fmtInt(r.total.requests),
      fmtNum(r.foreignPct, 0),
    ]),
    ['right', ...Array(12).fill('right')],
  );
  const rssTable = markdownTable(
    ['process', 'max RSS under load, MB (largest over rounds)'],
    (['passthrough', 'outbound', 'inbound'] as const).map((k) => [
      k === 'passthrough' ? 'passthrough gateway' : `${k} sidecar`,
      fmtNum(Math.max(...rows.map((r) => r.maxRssMB[k] ?? Number.NaN)), 1),
    ]),
    ['left', 'right'],
  );
  const sum = (f: (c: MeshCounts) => number, which: 'window' | 'total') =>
    rows.reduce((s, r) => s + f(r[which]), 0);
  const pooled = (which: 'window' | 'total'): MeshCounts => ({
    requests: sum((c) => c.requests, which),
    handshakesNew: sum((c) => c.handshakesNew, which),
    handshakesResumed: sum((c) => c.handshakesResumed, which),
    inboundHandshakes: sum((c) => c.inboundHandshakes, which),
  });
  const checks = [
    goal(
      'outbound sidecar CPU per request / passthrough (median of rounds)',
      ratio(rows, (r) => r.outboundUs / r.passthroughUs),
      '≤',
      SIDECAR_CPU_GOAL,
      'ratio',
    ),
    goal(
      'inbound sidecar CPU per request / passthrough (median of rounds)',
      ratio(rows, (r) => r.inboundUs / r.passthroughUs),
      '≤',
      SIDECAR_CPU_GOAL,
      'ratio',
    ),
    info(
      'whole mesh hop (both sidecars) CPU per request / passthrough',
      ratio(rows, (r) => (r.outboundUs + r.inboundUs) / r.passthroughUs),
      'ratio',
    ),
    goal(
      'mTLS handshakes between the sidecars per 1,000 requests, steady load (keep-alive)',
      handshakesPer1000(pooled('window')),
      '≤',
      HANDSHAKES_PER_1000_GOAL,
      'count',
    ),
    info(
      'mTLS handshakes per 1,000 requests from start (warmup included: the pool opening its connections)',
      handshakesPer1000(pooled('total')),
      'count',
    ),
  ];
  const notes = [
    `CPU: ${rows.length} round(s), each with a fresh passthrough gateway, inbound and outbound sidecar and registry; ${settings.warmupS} s warmup, then ${settings.durationS} s measured with two wrk (${connections} connections each) at once: one on passthrough, one on the mesh hop (Host: bench to the outbound listener). The ratio is of CPU time per request over the same seconds; absolute µs are inflated (three processes share one core and its caches): read the ratios. "hop ×" is both sidecars together. The mesh side answers fewer requests per second than passthrough (two processes per request share the core), and a process answering fewer handles fewer per event-loop turn, which costs a little more CPU each: this leans against the sidecars. The latency group's CPU rows compare at one and the same rate.`,
    'Handshakes are counted by the sidecars themselves: the outbound side’s peregrine_upstream_tls_handshakes_total (new, resumed) and the inbound listener’s peregrine_tls_handshakes_total; "requests" is the outbound side’s peregrine_mesh_requests_total. "Steady" is from 1 s into the measured seconds to their end: when the warmup’s wrk stops, the requests it had in flight are aborted and their connections between the sidecars closed, and the pool opens them again (resumed sessions) as the measured load starts; "from start" includes that and the warmup. Without keep-alive there would be 1,000 per 1,000 requests.',
  ];
  for (const r of rows) {
    const made = r.total.handshakesNew + r.total.handshakesResumed;
    if (made !== r.total.inboundHandshakes)
      notes.push(
        `cpu round ${r.round}: the outbound sidecar counted ${made} handshakes, the inbound one ${r.total.inboundHandshakes}.`,
      );
    if ((r.foreignPct ?? 0) > FOREIGN_PCT)
      notes.push(`cpu round ${r.round}: other processes used ${fmtNum(r.foreignPct, 0)}% of a core.`);
  }
  return { body: `${table}\n\n${rssTable}`, checks, notes, data: rows };
}
