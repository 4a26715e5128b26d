/**
 * Idle memory of a sidecar against the edge gateway's: the mesh and the passthrough gateway
 * started, one request sent through each (the readiness check), then left alone for
 * BENCH_MESH_IDLE seconds before their RSS is read.
 */
import { intFromEnv } from './env.ts';
import { type Group, sleep } from './feature-bench.ts';
import { info } from './goals.ts';
import { meshCertsFor, startMesh } from './mesh.ts';
import { treeRssKiB } from './rss.ts';
import { fmtNum, markdownTable } from './table.ts';

export const meshMemoryGroup: Group = {
  id: 'memory',
  title: 'Idle memory: sidecars against the edge gateway',
  async run({ ctx }) {
    const idleS = intFromEnv('BENCH_MESH_IDLE', 5);
    const mesh = await startMesh(ctx, await meshCertsFor(ctx));
    const mb = (pid: number) => {
      const kib = treeRssKiB(pid);
      return kib === undefined ? undefined : kib / 1024;
    };
    let rss: { edge?: number; outbound?: number; inbound?: number };
    try {
      await sleep(idleS * 1000);
      rss = {
        edge: mb(mesh.passthrough!.proc.pid),
        outbound: mb(mesh.outbound.proc.pid),
        inbound: mb(mesh.inbound.proc.pid),
      };
    } finally {
      await mesh.stop();
    }
    const per = (x: number | undefined) => (x !== undefined && rss.edge ? x / rss.edge : undefined);
    const table = markdownTable(
      ['process', 'idle RSS, MB', '× edge gateway'],
      [
        ['edge gateway (passthrough: one listener, one route, one upstream)', fmtNum(rss.edge, 1), '1.00'],
        [
          'outbound sidecar (outbound listener, one destination from the registry, mTLS)',
          fmtNum(rss.outbound, 1),
          fmtNum(per(rss.outbound), 2),
        ],
        [
          'inbound sidecar (mTLS listener, allow-list, registration)',
          fmtNum(rss.inbound, 1),
          fmtNum(per(rss.inbound), 2),
        ],
      ],
      ['left', 'right', 'right'],
    );
    return {
      body: table,
      checks: [
        info('edge gateway idle RSS', rss.edge, 'MB'),
        info('outbound sidecar idle RSS', rss.outbound, 'MB'),
        info('inbound sidecar idle RSS', rss.inbound, 'MB'),
      ],
      notes: [
        `Idle memory: RSS (VmRSS) ${idleS} s (BENCH_MESH_IDLE) after each answered its first request; "MB" is MiB.`,
      ],
      data: rss,
    };
  },
};
