/**
 * The latency a mesh hop adds at a fixed rate: the passthrough gateway and the mesh hop (client →
 * outbound sidecar → mTLS → inbound sidecar → upstream) run at the same time and take turns at
 * one rate (bench/lib/paced-turns.ts), so the difference of their p50 and p99 is what the second
 * proxy, the TLS on the hop and the mesh's own work add. Also the CPU per request of each
 * process at that rate.
 */
import { intFromEnv } from './env.ts';
import type { Group } from './feature-bench.ts';
import { info } from './goals.ts';
import { handshakesPer1000, type MeshCounts, meshCertsFor, meshCounts, startMesh } from './mesh.ts';
import { MESH_WARMUP_REQUESTS } from './mesh-cpu.ts';
import { pacedTurns, turnsFromEnv } from './paced-turns.ts';
import { added, type LatencySummary, summariseLatencies } from './stats.ts';
import { fmtInt, fmtMs, fmtNum, markdownTable } from './table.ts';

type Path = 'passthrough' | 'mesh';

export interface MeshLatencyRow {
  path: Path;
  latency: LatencySummary | undefined;
  requests: number;
  /** CPU µs per request of each process on the path (passthrough; outbound, inbound). */
  cpuUsPerReq: number[];
  failed: number;
}

export const meshLatencyGroup: Group = {
  id: 'latency',
  title: 'Latency added by the mesh hop at a fixed rate',
  async run({ ctx, settings }) {
    const turnSettings = turnsFromEnv('BENCH_MESH');
    const { rate, durationS, sliceS, connections } = turnSettings;
    const warmup = {
      requests: intFromEnv('BENCH_MESH_WARMUP_REQUESTS', MESH_WARMUP_REQUESTS),
      rate: intFromEnv('BENCH_MESH_WARMUP_RATE', 2000),
    };
    const mesh = await startMesh(ctx, await meshCertsFor(ctx));
    let turns: Awaited<ReturnType<typeof pacedTurns<Path>>>;
    let counts: MeshCounts;
    try {
      const pass = mesh.passthrough!;
      turns = await pacedTurns<Path>(
        [
          { id: 'passthrough', url: pass.url, pids: [pass.proc.pid] },
          {
            id: 'mesh',
            url: mesh.url,
            headers: mesh.headers,
            pids: [mesh.outbound.proc.pid, mesh.inbound.proc.pid],
          },
        ],
        {
          ...turnSettings,
          warmup,
          warmupS: settings.warmupS,
          quietWaitS: settings.quietWaitS,
          shared: [ctx.upstream.proc.pid, ctx.otlp.proc.pid, mesh.registry.proc.pid],
        },
      );
      counts = await meshCounts(mesh);
    } finally {
      await mesh.stop();
    }
    const rows: MeshLatencyRow[] = turns.results.map((t) => ({
      path: t.id,
      latency: summariseLatencies(t.latenciesMs),
      requests: t.latenciesMs.length,
      cpuUsPerReq: t.cpuMs.map((ms) => (ms * 1000) / Math.max(1, t.latenciesMs.length)),
      failed: t.failed,
    }));
    const pass = rows.find((r) => r.path === 'passthrough');
    const hop = rows.find((r) => r.path === 'mesh');
    const table = markdownTable(
      ['path', 'answers', 'p50 ms', 'p99 ms', 'max ms', 'CPU µs/req', 'failed'],
      rows.map((r) => [
        r.path === 'mesh' ? 'mesh hop (outbound → inbound sidecar)' : 'passthrough gateway',
        fmtInt(r.requests),
        fmtMs(r.latency?.p50),
        fmtMs(r.latency?.p99),
        fmtMs(r.latency?.max),
        r.cpuUsPerReq.map((us) => fmtNum(us, 1)).join(' + '),
        fmtInt(r.failed),
      ]),
      ['left', ...Array(6).fill('right')],
    );
    const passUs = pass?.cpuUsPerReq[0];
    const checks = [
      info(
        `mesh hop: p50 added over passthrough at ${fmtInt(rate)} req/s`,
        added(hop?.latency?.p50, pass?.latency?.p50),
        'ms',
      ),
      info('mesh hop: p99 added over passthrough', added(hop?.latency?.p99, pass?.latency?.p99), 'ms'),
      info(
        'outbound sidecar CPU per request / passthrough at the fixed rate',
        passUs && hop ? hop.cpuUsPerReq[0]! / passUs : undefined,
        'ratio',
      ),
      info(
        'inbound sidecar CPU per request / passthrough at the fixed rate',
        passUs && hop ? hop.cpuUsPerReq[1]! / passUs : undefined,
        'ratio',
      ),
      info(
        'mTLS handshakes between the sidecars per 1,000 requests at the fixed rate (from start)',
        handshakesPer1000(counts),
        'count',
      ),
    ];
    const notes = [
      `Latency: passthrough and the mesh hop ran together and took turns: ${sliceS} s slices at ${fmtInt(rate)} req/s (BENCH_MESH_RATE) each, until each had ${durationS} s, after a warmup of ${fmtInt(warmup.requests)} requests each (${fmtInt(warmup.rate)} req/s, 16 at a time: JIT compilation settled) and ${settings.warmupS} s at the rate; sent open-loop over up to ${connections} keep-alive connections from the bench process; latency from sending to the end of the body, so it includes the bench's own event loop alike for both. The mesh hop's CPU is outbound + inbound. An "added" value below 0 is noise.`,
      `Other processes used ${fmtNum(turns.foreignPct, 0)}% of a core during the latency turns.`,
    ];
    for (const r of rows)
      if (r.failed > 0)
        notes.push(`latency: ${r.path} had ${r.failed} failed requests (not 2xx, or no answer).`);
    return { body: table, checks, notes, data: { rows, counts } };
  },
};
