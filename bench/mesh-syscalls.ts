/**
 * System calls per request of each process on a mesh hop against a passthrough gateway, counted by
 * `strace -c -f` over a fixed number of requests at a low fixed rate: the mesh of bench/lib/mesh.ts
 * (registry, inbound sidecar in front of the bench upstream, outbound sidecar) and the passthrough
 * gateway, each path loaded in turn. Like callgrind's instruction counts, the counts do not depend
 * on how busy the machine is (at a low rate every request gets its own wakeups in every process),
 * so they can be taken on a shared machine; strace's times are not reported (tracing inflates them).
 *
 *   node bench/mesh-syscalls.ts                    # 2000 requests at 200 req/s per path
 *   SYSCALLS_REQUESTS=1000 SYSCALLS_RATE=100 node bench/mesh-syscalls.ts
 *   SYSCALLS_BURST=16 SYSCALLS_RATE=800 node bench/mesh-syscalls.ts   # 16 at once, 50 bursts a second
 *
 * With SYSCALLS_BURST the requests go out that many at once (one per connection): each process
 * finds several ready per wakeup, as at saturation, where what a process pays per wakeup or per
 * read (rather than per request) is spread over more requests, while the machine stays lightly
 * loaded.
 *
 * BENCH_PEREGRINE_DIR runs the gateways from another checkout. Needs strace.
 */
import { spawn } from 'node:child_process';
import { intFromEnv } from './lib/env.ts';
import { withStandaloneMesh } from './lib/mesh.ts';
import { PacedLoad, pacedFailures } from './lib/paced.ts';
import { findExecutable, runMain } from './lib/proc.ts';
import { fmtNum, markdownTable } from './lib/table.ts';

/** Calls by system call name, from strace -c's summary table. */
export function parseStraceSummary(text: string): Map<string, number> {
  const calls = new Map<string, number>();
  for (const line of text.split('\n')) {
    // % time  seconds  usecs/call  calls  [errors]  syscall
    const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?([a-z_0-9]+)\s*$/.exec(line);
    if (m && m[2] !== 'total') calls.set(m[2]!, Number(m[1]));
  }
  return calls;
}

interface Traced {
  stop(): Promise<Map<string, number>>;
}

/** `strace -c -f -p pid` until stopped: every thread of the process. */
function traceSyscalls(strace: string, pid: number): Promise<Traced> {
  const child = spawn(strace, ['-c', '-f', '-p', String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (c: Buffer) => {
    err += c.toString('utf8');
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // strace says "Process N attached" per thread; give it a moment to attach them all.
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      if (!/attached/.test(err)) reject(new Error(`strace did not attach to ${pid}: ${err}`));
      else
        resolve({
          async stop() {
            child.kill('SIGINT');
            await exited;
            return parseStraceSummary(err);
          },
        });
    }, 1000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

async function main(): Promise<void> {
  const strace = findExecutable('strace', ['/usr/bin', '/bin']);
  if (!strace) throw new Error('needs strace (apt-get install strace)');
  const requests = intFromEnv('SYSCALLS_REQUESTS', 2000);
  const rate = intFromEnv('SYSCALLS_RATE', 200);
  const burst = intFromEnv('SYSCALLS_BURST', 1);
  const connections = Math.max(burst, intFromEnv('SYSCALLS_CONNECTIONS', 16));
  const columns: { name: string; calls: Map<string, number> }[] = [];
  await withStandaloneMesh('mesh-syscalls', undefined, async (mesh) => {
    const paths = [
      {
        url: mesh.passthrough!.url,
        headers: undefined,
        procs: [['passthrough', mesh.passthrough!.proc.pid]],
      },
      {
        url: mesh.url,
        headers: mesh.headers,
        procs: [
          ['outbound', mesh.outbound.proc.pid],
          ['inbound', mesh.inbound.proc.pid],
        ],
      },
    ] as const;
    for (const p of paths) {
      const load = new PacedLoad(p.url, connections);
      try {
        await load.run(rate, 2, p.headers, burst); // warmup: connections open, code compiled
        const traced = await Promise.all(p.procs.map(([, pid]) => traceSyscalls(strace, pid)));
        const r = await load.run(rate, requests / rate, p.headers, burst);
        const counts = await Promise.all(traced.map((t) => t.stop()));
        if (pacedFailures(r) > 0 || r.latenciesMs.length !== requests)
          throw new Error(`${p.procs[0]![0]}: ${pacedFailures(r)} failed of ${r.sent}`);
        for (const [i, [name]] of p.procs.entries()) columns.push({ name, calls: counts[i]! });
      } finally {
        await load.close();
      }
    }
  });
  const names = [...new Set(columns.flatMap((c) => [...c.calls.keys()]))];
  const perReq = (c: (typeof columns)[number], name: string) => (c.calls.get(name) ?? 0) / requests;
  names.sort((a, b) => perReq(columns[1]!, b) - perReq(columns[1]!, a));
  const rows = names
    .filter((n) => columns.some((c) => perReq(c, n) >= 0.005))
    .map((n) => [n, ...columns.map((c) => fmtNum(perReq(c, n), 2))]);
  rows.push([
    '**total**',
    ...columns.map((c) => fmtNum([...c.calls.values()].reduce((s, x) => s + x, 0) / requests, 2)),
  ]);
  process.stdout.write(
    `System calls per request (strace -c -f; ${requests} requests at ${rate} req/s${burst > 1 ? `, ${burst} at a time` : ''} over up to ${connections} connections per path)\n\n` +
      `${markdownTable(['syscall', ...columns.map((c) => c.name)], rows, ['left', ...columns.map(() => 'right' as const)])}\n`,
  );
}

if (import.meta.main) runMain('mesh-syscalls', main);
