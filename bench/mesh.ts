/**
 * `npm run bench:mesh`: one mesh hop against a passthrough gateway (issue 16), each goal marked
 * PASS or MISS.
 *
 * - cpu: the passthrough gateway and both sidecars side by side under wrk; CPU per request of the
 *   outbound and of the inbound sidecar each ≤ 1.2× passthrough's; TLS handshakes between the
 *   sidecars per 1,000 requests (keep-alive: amortised); RSS under load.
 * - latency: the mesh hop and passthrough at one fixed rate, taking turns; the p50 and p99 the
 *   hop adds.
 * - memory: a sidecar's idle RSS against the edge gateway's.
 *
 * The certificates come from `peregrine certs` (a development CA, an SVID per service); the
 * inbound sidecar registers with a registry the outbound one follows (bench/lib/mesh.ts).
 *
 * About 6 minutes on a quiet machine. Environment: BENCH_GROUPS (cpu,latency,memory),
 * BENCH_MESH_ROUNDS (3), BENCH_MESH_WARMUP_REQUESTS (30,000 per path before measuring: V8 is still
 * compiling before that), BENCH_MESH_WARMUP_RATE (2,000 req/s: the latency group's warmup),
 * BENCH_MESH_RATE (1000 req/s), BENCH_MESH_DURATION (20 s: latency turns, each),
 * BENCH_MESH_SLICE (1 s), BENCH_MESH_CONNECTIONS (16), BENCH_MESH_IDLE (5 s), BENCH_MESH_CONTROL
 * (chain; single: one passthrough gateway, the comparison of earlier runs), BENCH_MESH_PROTOCOL
 * (http1; h2: the hop between the sidecars over HTTP/2); and bench/run.ts's
 * BENCH_DURATION, BENCH_WARMUP, BENCH_CONNECTIONS (split between the two wrk), BENCH_PIN,
 * BENCH_QUIET_WAIT, BENCH_PEREGRINE_DIR, BENCH_KEEP_TMP. Needs wrk.
 */
import { runFeatureBench } from './lib/feature-bench.ts';
import { meshCpuGroup } from './lib/mesh-cpu.ts';
import { meshLatencyGroup } from './lib/mesh-latency.ts';
import { meshMemoryGroup } from './lib/mesh-memory.ts';
import { runMain } from './lib/proc.ts';

async function main(): Promise<void> {
  await runFeatureBench({
    name: 'mesh',
    title: 'Peregrine mesh benchmark',
    groups: [meshCpuGroup, meshLatencyGroup, meshMemoryGroup],
  });
}

if (import.meta.main) runMain('bench:mesh', main);
