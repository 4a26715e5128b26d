/**
 * What each process of a mesh hop and of a chain of two passthrough gateways spends per request,
 * by what the kernel and V8 count: CPU (user and system, every thread; the main thread's own time
 * and scheduler slices), context switches (voluntary: waits for I/O; involuntary: preemptions),
 * page faults and garbage collections, over the same paced load on each path in turn. The chain
 * is the control bench:mesh holds the sidecars against (bench/lib/mesh-cpu.ts).
 *
 * PROBE_BURST sends the requests that many at once (one per connection), so each process finds
 * several ready per wakeup, as under saturation, while the machine stays lightly loaded; a list
 * (`1,16`) measures each in turn. PROBE_PERF_DIR records each process with `perf record -e
 * cpu-clock -g` over its measured seconds and prints its samples by kind of code
 * (bench/lib/perf-categories.ts; run with NODE_OPTIONS=--perf-basic-prof to name V8's JIT code).
 * Times read on a shared machine are indicative; the counts and the split of the samples travel.
 *
 *   node bench/mesh-counters.ts                       # 1000 req/s, 16 at a time, 10 s, 3 rounds
 *   PROBE_BURST=1,16 PROBE_ROUNDS=1 node bench/mesh-counters.ts
 *   PROBE_PERF_DIR=/tmp/perf NODE_OPTIONS=--perf-basic-prof node bench/mesh-counters.ts
 *
 * The first rounds run while V8 still compiles (about 25,000 requests per gateway): read the last.
 * PROBE_PIN=1 pins as BENCH_PIN=1 does. BENCH_PEREGRINE_DIR runs the gateways from another checkout.
 */
import { execFileSync, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { intFromEnv } from './lib/env.ts';
import { type MeshGateway, withStandaloneMesh } from './lib/mesh.ts';
import { PacedLoad, pacedFailures } from './lib/paced.ts';
import { samplesByCategory } from './lib/perf-categories.ts';
import { pinPlan, pinSelf } from './lib/pin.ts';
import { findExecutable, runMain } from './lib/proc.ts';
import { metricSum, scrapeMetrics } from './lib/prom.ts';
import { threadSwitches } from './lib/switches.ts';
import { fmtNum, markdownTable } from './lib/table.ts';

/** Linux's USER_HZ: /proc/<pid>/stat's CPU times are in hundredths of a second. */
const US_PER_TICK = 10_000;

interface Counters {
  cpuUs: { user: number; sys: number };
  minorFaults: number;
  switches: { voluntary: number; involuntary: number };
  main: { runNs: number; slices: number };
  gcs: { minor: number; major: number; ms: number };
}

function counters(pid: number, metrics: Awaited<ReturnType<typeof scrapeMetrics>>): Counters {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  let voluntary = 0;
  let involuntary = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const thread = threadSwitches(pid, Number(tid));
    voluntary += thread.voluntary;
    involuntary += thread.involuntary;
  }
  const [runNs, , slices] = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ').map(Number);
  const gc = (kind: string) => metricSum(metrics, 'peregrine_nodejs_gc_duration_seconds_count', { kind });
  return {
    cpuUs: { user: Number(f[11]) * US_PER_TICK, sys: Number(f[12]) * US_PER_TICK },
    minorFaults: Number(f[7]),
    switches: { voluntary, involuntary },
    main: { runNs: runNs!, slices: slices! },
    gcs: {
      minor: gc('minor'),
      major: gc('major'),
      ms: metricSum(metrics, 'peregrine_nodejs_gc_duration_seconds_sum') * 1000,
    },
  };
}

async function read(g: MeshGateway): Promise<Counters> {
  return counters(g.proc.pid, await scrapeMetrics(g.admin));
}

/** `perf record` of one process until stopped. */
function perfRecord(perf: string, pid: number, out: string): { stop(): Promise<void> } {
  const child = spawn(
    perf,
    ['record', '-q', '-e', 'cpu-clock', '-F', '4000', '-g', '-p', String(pid), '-o', out],
    {
      stdio: 'ignore',
    },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    async stop() {
      child.kill('SIGINT');
      await exited;
    },
  };
}

function perfCategories(perf: string, file: string): Map<string, number> {
  const report = execFileSync(
    perf,
    ['report', '-i', file, '--no-children', '--sort', 'dso,sym', '--stdio', '-g', 'none', '-n'],
    { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, stdio: ['ignore', 'pipe', 'ignore'] },
  );
  return samplesByCategory(report);
}

interface Measured {
  name: string;
  requests: number;
  before: Counters;
  after: Counters;
  perfFile: string | undefined;
}

async function main(): Promise<void> {
  const rate = intFromEnv('PROBE_RATE', 1000);
  const bursts = (process.env.PROBE_BURST ?? '16').split(',').map(Number);
  const rounds = intFromEnv('PROBE_ROUNDS', 3);
  const durationS = intFromEnv('PROBE_DURATION', 10);
  const connections = Math.max(...bursts, intFromEnv('PROBE_CONNECTIONS', 16));
  const perfDir = process.env.PROBE_PERF_DIR;
  const perf = perfDir ? findExecutable('perf', ['/usr/bin']) : undefined;
  if (perfDir && !perf) throw new Error('PROBE_PERF_DIR needs perf (linux-perf)');
  const pin = pinPlan({ BENCH_PIN: process.env.PROBE_PIN });
  if (pin) pinSelf(pin);
  const measured: Measured[] = [];
  await withStandaloneMesh(
    'mesh-counters',
    pin,
    async (mesh) => {
      const paths = [
        {
          url: mesh.passthrough!.url,
          headers: undefined,
          gateways: [
            ['passthrough 1st', mesh.passthrough!],
            ['passthrough 2nd', mesh.passthroughBack!],
          ] as const,
        },
        {
          url: mesh.url,
          headers: mesh.headers,
          gateways: [
            ['outbound', mesh.outbound],
            ['inbound', mesh.inbound],
          ] as const,
        },
      ];
      const loads = paths.map((p) => new PacedLoad(p.url, connections));
      try {
        for (const [i, p] of paths.entries()) await loads[i]!.run(rate, 3, p.headers, bursts[0]);
        for (let round = 1; round <= rounds; round++) {
          for (const burst of bursts) {
            for (const [i, p] of paths.entries()) {
              const files = p.gateways.map(([name]) =>
                perfDir ? join(perfDir, `${name.replace(/ /g, '-')}-b${burst}-r${round}.data`) : undefined,
              );
              const recorders = perf
                ? p.gateways.map(([, g], j) => perfRecord(perf, g.proc.pid, files[j]!))
                : [];
              if (perf) await new Promise((r) => setTimeout(r, 500));
              const before = await Promise.all(p.gateways.map(([, g]) => read(g)));
              const r = await loads[i]!.run(rate, durationS, p.headers, burst);
              const after = await Promise.all(p.gateways.map(([, g]) => read(g)));
              await Promise.all(recorders.map((x) => x.stop()));
              if (pacedFailures(r) > 0) throw new Error(`${pacedFailures(r)} failed of ${r.sent}`);
              for (const [j, [name]] of p.gateways.entries())
                measured.push({
                  name: `${name} (burst ${burst}, round ${round})`,
                  requests: r.latenciesMs.length,
                  before: before[j]!,
                  after: after[j]!,
                  perfFile: files[j],
                });
            }
          }
        }
      } finally {
        for (const l of loads) await l.close();
      }
    },
    'chain',
  );
  const rows = measured.map(({ name, requests, before: b, after: a }) => {
    const per = (x: number, scale = 1) => fmtNum((x * scale) / requests, 2);
    return [
      name,
      String(requests),
      per(a.cpuUs.user - b.cpuUs.user),
      per(a.cpuUs.sys - b.cpuUs.sys),
      per(a.main.runNs - b.main.runNs, 1 / 1000),
      per(a.main.slices - b.main.slices),
      per(a.switches.voluntary - b.switches.voluntary),
      per(a.switches.involuntary - b.switches.involuntary),
      per(a.minorFaults - b.minorFaults),
      per(a.gcs.minor - b.gcs.minor, 1000),
      per(a.gcs.major - b.gcs.major, 1000),
      per(a.gcs.ms - b.gcs.ms, 1000),
    ];
  });
  let out =
    `Per request (${rate} req/s, ${durationS} s per path, burst and round${pin ? ', pinned' : ''})\n\n` +
    markdownTable(
      [
        'process',
        'answers',
        'user µs',
        'system µs',
        'main thread µs',
        'main thread slices',
        'voluntary switches',
        'involuntary switches',
        'minor faults',
        'scavenges / 1,000',
        'mark-compacts / 1,000',
        'GC pause µs',
      ],
      rows,
      ['left', ...Array(11).fill('right')],
    );
  if (perf) {
    const cats = measured.map((m) => ({ m, c: perfCategories(perf, m.perfFile!) }));
    const names = [...new Set(cats.flatMap(({ c }) => [...c.keys()]))].sort((x, y) =>
      cats.reduce((s, { c }) => s + (c.get(y) ?? 0) - (c.get(x) ?? 0), 0),
    );
    // A sample is 250 µs of CPU (4,000 Hz).
    const us = (n: number, m: Measured) => fmtNum((n * 250) / m.requests, 1);
    out +=
      '\n\nperf cpu-clock samples as µs per request, by kind of code\n\n' +
      markdownTable(
        ['code', ...cats.map(({ m }) => m.name)],
        [
          ...names.map((n) => [n, ...cats.map(({ m, c }) => us(c.get(n) ?? 0, m))]),
          [
            '**all**',
            ...cats.map(({ m, c }) =>
              us(
                [...c.values()].reduce((s, x) => s + x, 0),
                m,
              ),
            ),
          ],
        ],
        ['left', ...cats.map(() => 'right' as const)],
      );
  }
  process.stdout.write(`${out}\n`);
}

if (import.meta.main) runMain('mesh-counters', main);
