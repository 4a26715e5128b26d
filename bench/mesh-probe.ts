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
 * BENCH_PEREGRINE_DIR runs the gateways from another checkout (as bench/run.ts does).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { intFromEnv } from './lib/env.ts';
import { countsBetween, makeMeshCerts, meshCounts, startMesh } from './lib/mesh.ts';
import { PacedLoad, pacedFailures } from './lib/paced.ts';
import { runMain, waitForHttp } from './lib/proc.ts';
import { summariseLatencies } from './lib/stats.ts';
import { startPeer } from './lib/targets.ts';

const ROOT = join(import.meta.dirname, '..');
/** Upper bounds of the buckets, ms; the last bucket is everything above. */
const BUCKETS_MS = [1, 2, 5, 10, 20, 35, 45, 80, 120] as const;

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
  const tmp = mkdtempSync(join(tmpdir(), 'peregrine-mesh-probe-'));
  const up = await startPeer({ node: process.execPath, root: ROOT }, 'upstream.ts');
  try {
    await waitForHttp(`${up.origin}/`, { proc: up.proc });
    const certs = await makeMeshCerts(tmp);
    const mesh = await startMesh(
      {
        peregrineDir: process.env.BENCH_PEREGRINE_DIR ?? ROOT,
        tmpDir: tmp,
        pin: undefined,
        upstream: { origin: up.origin },
      },
      certs,
    );
    try {
      const paths = [
        { id: 'passthrough', url: `${mesh.passthrough!.url}`, headers: undefined },
        { id: 'mesh', url: mesh.url, headers: mesh.headers },
      ];
      for (const p of paths) {
        const load = new PacedLoad(p.url, connections);
        try {
          await load.run(rate, 2, p.headers); // warmup
          const before = p.id === 'mesh' ? await meshCounts(mesh) : undefined;
          const r = await load.run(rate, durationS, p.headers);
          const hs = before && countsBetween(before, await meshCounts(mesh));
          const s = summariseLatencies(r.latenciesMs);
          const fmt = (n: number | undefined) => (n === undefined ? '-' : n.toFixed(2));
          process.stdout.write(
            `${p.id}: ${r.latenciesMs.length} answers at ${r.rate.toFixed(0)} req/s, failed ${pacedFailures(r)}; ` +
              `p50 ${fmt(s?.p50)} p99 ${fmt(s?.p99)} max ${fmt(s?.max)} ms` +
              (hs
                ? `; handshakes between the sidecars ${hs.handshakesNew} new, ${hs.handshakesResumed} resumed`
                : '') +
              `\n  ${buckets(r.latenciesMs)}\n`,
          );
        } finally {
          await load.close();
        }
      }
    } finally {
      await mesh.stop();
    }
  } finally {
    await up.proc.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (import.meta.main) runMain('mesh-probe', main);
