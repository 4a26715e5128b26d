/**
 * Event-loop wakeups and turns per request of each process on a mesh hop against a chain of two
 * passthrough gateways (bench/lib/mesh.ts, `passthrough: 'chain'`: each path two processes a
 * request), at a paced load of bursts (default 16 at once, 800 req/s: each process finds several
 * requests ready per wakeup, as at saturation, while the machine stays lightly loaded).
 *
 * For each path and process, over a fixed number of requests:
 * - strace of every call to epoll_pwait, read, write, writev and futex (`strace -f -o`), split by
 *   what libuv asked for: a zero timeout (every loop turn polls once without waiting first, because
 *   Node measures idle time; a turn with immediates pending polls only that way) or a blocking one
 *   (the process sleeps until I/O or a timer), and by what came back (events per poll, reads that
 *   found nothing). Main thread and the others apart.
 * - `perf stat` software events (task-clock, context switches, migrations, page faults) per request,
 *   in a run of its own without strace (times vary with the machine; the counts of the first part
 *   vary much less).
 * - with WAKEUPS_ASYNC=1, async resources created per request by type (Immediate, TickObject,
 *   Timeout, …; an async_hooks init hook preloaded by bench/lib/async-counts.cjs, which slows the
 *   process: a run of its own). Node's native immediates (TLSWrap's write completion) have no async
 *   resource; they show as turns with a zero timeout that found no events.
 *
 *   node bench/mesh-wakeups.ts
 *   WAKEUPS_REQUESTS=4000 WAKEUPS_RATE=800 WAKEUPS_BURST=16 WAKEUPS_ASYNC=1 node bench/mesh-wakeups.ts
 *
 * BENCH_PEREGRINE_DIR runs the gateways from another checkout. Needs strace and perf.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { intFromEnv } from './lib/env.ts';
import { withStandaloneMesh } from './lib/mesh.ts';
import { PacedLoad, pacedFailures } from './lib/paced.ts';
import { pinPlan, pinSelf } from './lib/pin.ts';
import { findExecutable, runMain } from './lib/proc.ts';
import { type Switches, switchesPerRequest, threadSwitches } from './lib/switches.ts';
import { fmtNum, markdownTable } from './lib/table.ts';

/** What one thread did, from strace's lines. */
export interface ThreadCalls {
  /** epoll_pwait with a zero timeout: calls, and those that returned events. */
  pollsZero: number;
  pollsZeroWithEvents: number;
  /** epoll_pwait with a non-zero timeout (the thread may sleep): calls, those that returned events. */
  pollsBlocking: number;
  pollsBlockingWithEvents: number;
  /**
   * Turns that polled without waiting, found nothing and went on without blocking: a turn forced by
   * pending immediates (a zero-timeout poll followed by another zero-timeout poll).
   */
  forcedTurns: number;
  /** Events returned by all polls. */
  events: number;
  reads: number;
  readsEmpty: number;
  writes: number;
  writevs: number;
  futex: number;
}

function emptyCalls(): ThreadCalls {
  return {
    pollsZero: 0,
    pollsZeroWithEvents: 0,
    pollsBlocking: 0,
    pollsBlockingWithEvents: 0,
    forcedTurns: 0,
    events: 0,
    reads: 0,
    readsEmpty: 0,
    writes: 0,
    writevs: 0,
    futex: 0,
  };
}

// epoll_pwait(fd, events, maxevents, timeout, sigmask, sigsetsize) = n
const POLL_TAIL = /, \d+, (-?\d+), (?:NULL|\[[^\]]*\]|0x[0-9a-f]+), \d+\) += (-?\d+)/;
const RESULT = /\) += (-?\d+)/;

/**
 * Calls by thread id from `strace -f -o file` output (each line starts with the thread id; a call
 * another thread interrupted is split into `<unfinished ...>` and `<... name resumed>` lines).
 */
export function parseStraceLines(text: string): Map<number, ThreadCalls> {
  const byTid = new Map<number, ThreadCalls>();
  const unfinished = new Map<number, string>();
  // Per thread: the last poll was a zero-timeout one that found nothing.
  const emptyZero = new Set<number>();
  for (const raw of text.split('\n')) {
    const m = /^(\d+) +(.*)$/.exec(raw);
    if (!m) continue;
    const tid = Number(m[1]);
    let line = m[2]!;
    if (line.endsWith('<unfinished ...>')) {
      unfinished.set(tid, line.slice(0, -'<unfinished ...>'.length));
      continue;
    }
    const resumed = /^<\.\.\. \w+ resumed>(.*)$/.exec(line);
    if (resumed) {
      line = (unfinished.get(tid) ?? '') + resumed[1]!;
      unfinished.delete(tid);
    }
    const name = /^(\w+)\(/.exec(line)?.[1];
    if (!name) continue;
    let c = byTid.get(tid);
    if (!c) {
      c = emptyCalls();
      byTid.set(tid, c);
    }
    const result = Number(RESULT.exec(line)?.[1] ?? Number.NaN);
    if (name === 'epoll_pwait' || name === 'epoll_wait') {
      const p = POLL_TAIL.exec(line);
      const timeout = p ? Number(p[1]) : Number.NaN;
      const n = p ? Number(p[2]) : result;
      if (timeout === 0 && emptyZero.has(tid)) c.forcedTurns++;
      if (timeout === 0 && !(n > 0)) emptyZero.add(tid);
      else emptyZero.delete(tid);
      if (timeout === 0) {
        c.pollsZero++;
        if (n > 0) c.pollsZeroWithEvents++;
      } else {
        c.pollsBlocking++;
        if (n > 0) c.pollsBlockingWithEvents++;
      }
      if (n > 0) c.events += n;
    } else if (name === 'read') {
      c.reads++;
      if (!(result > 0)) c.readsEmpty++;
    } else if (name === 'write') c.writes++;
    else if (name === 'writev') c.writevs++;
    else if (name === 'futex') c.futex++;
  }
  return byTid;
}

function sumCalls(calls: Iterable<ThreadCalls>): ThreadCalls {
  const s = emptyCalls();
  for (const c of calls) for (const k of Object.keys(s) as (keyof ThreadCalls)[]) s[k] += c[k];
  return s;
}

/** Starts `cmd` and resolves once it has had a moment to attach; `stop` interrupts it. */
async function attach(
  cmd: string,
  args: string[],
): Promise<{ child: ChildProcess; stop(): Promise<string> }> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => {
    err += c.toString('utf8');
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise((r) => setTimeout(r, 1000));
  if (child.exitCode !== null) throw new Error(`${cmd} exited: ${err}`);
  return {
    child,
    async stop() {
      child.kill('SIGINT');
      await exited;
      return err;
    },
  };
}

/** perf stat -x, output: value by event name. */
export function parsePerfStat(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const f = line.split(',');
    if (f.length >= 3 && f[2] && /^[\d.]+$/.test(f[0]!)) out.set(f[2], Number(f[0]));
  }
  return out;
}

const PERF_EVENTS = 'task-clock,context-switches,cpu-migrations,page-faults';

async function asyncCounts(pid: number): Promise<Record<string, number>> {
  const file = join(tmpdir(), `peregrine-async-counts-${pid}.json`);
  rmSync(file, { force: true });
  process.kill(pid, 'SIGUSR2');
  for (let i = 0; i < 50; i++) {
    await new Promise((r) => setTimeout(r, 20));
    try {
      const counts = JSON.parse(readFileSync(file, 'utf8')) as Record<string, number>;
      rmSync(file, { force: true });
      return counts;
    } catch {}
  }
  throw new Error(`no async counts from ${pid} (is bench/lib/async-counts.cjs preloaded?)`);
}

interface Path {
  url: string;
  headers: Readonly<Record<string, string>> | undefined;
  procs: [string, number][];
}

interface Column {
  name: string;
  main: ThreadCalls;
  others: ThreadCalls;
  perf: Map<string, number>;
  async: Record<string, number> | undefined;
  /** The main thread's context switches per request (/proc), in the perf run. */
  switches: Switches;
  /** User and system CPU seconds in the perf run (/proc, 10 ms ticks). */
  times: [number, number];
}

/** A process's user and system CPU so far (all threads), in seconds (/proc/<pid>/stat, clock ticks). */
function processTimes(pid: number): [number, number] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return [Number(f[11]) / 100, Number(f[12]) / 100];
}

async function main(): Promise<void> {
  const strace = findExecutable('strace', ['/usr/bin', '/bin']);
  const perf = findExecutable('perf', ['/usr/bin', '/bin']);
  if (!strace || !perf) throw new Error('needs strace and perf');
  const requests = intFromEnv('WAKEUPS_REQUESTS', 4000);
  const rate = intFromEnv('WAKEUPS_RATE', 800);
  const burst = intFromEnv('WAKEUPS_BURST', 16);
  const connections = Math.max(burst, intFromEnv('WAKEUPS_CONNECTIONS', 16));
  const withAsync = process.env.WAKEUPS_ASYNC === '1';
  const together = process.env.WAKEUPS_TOGETHER === '1';
  const pin = pinPlan(process.env);
  if (pin) pinSelf(pin);
  if (withAsync)
    process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --require ${join(import.meta.dirname, 'lib/async-counts.cjs')}`;
  const columns: Column[] = [];
  const tmp = tmpdir();
  await withStandaloneMesh(
    'mesh-wakeups',
    pin,
    async (mesh) => {
      const chain: Path = {
        url: mesh.passthrough!.url,
        headers: undefined,
        procs: [
          ['passthrough 1st', mesh.passthrough!.proc.pid],
          ['passthrough 2nd', mesh.passthroughBack!.proc.pid],
        ],
      };
      const hop: Path = {
        url: mesh.url,
        headers: mesh.headers,
        procs: [
          ['outbound', mesh.outbound.proc.pid],
          ['inbound', mesh.inbound.proc.pid],
        ],
      };
      // In turn, or both paths loaded at once (as bench:mesh's CPU group does, at saturation).
      const phases = together ? [[chain, hop]] : [[chain], [hop]];
      for (const phase of phases) {
        const loads = phase.map((p) => ({ p, load: new PacedLoad(p.url, connections) }));
        const p = { procs: phase.flatMap((x) => x.procs) as [string, number][] };
        const runAll = (durationS: number) =>
          Promise.all(loads.map(({ p, load }) => load.run(rate, durationS, p.headers, burst)));
        const run = async () => {
          for (const [i, r] of (await runAll(requests / rate)).entries())
            if (pacedFailures(r) > 0 || r.latenciesMs.length !== requests)
              throw new Error(`${loads[i]!.p.procs[0]![0]}: ${pacedFailures(r)} failed of ${r.sent}`);
        };
        try {
          await runAll(3); // warmup: connections open, code compiled
          const files = p.procs.map(([, pid]) => join(tmp, `mesh-wakeups-${pid}.strace`));
          const traced = await Promise.all(
            p.procs.map(([, pid], i) =>
              attach(strace, [
                '-f',
                '-s',
                '0',
                '-e',
                'trace=epoll_pwait,epoll_wait,read,write,writev,futex',
                '-o',
                files[i]!,
                '-p',
                String(pid),
              ]),
            ),
          );
          await run();
          await Promise.all(traced.map((t) => t.stop()));
          const perfs = await Promise.all(
            p.procs.map(([, pid]) => attach(perf, ['stat', '-x', ',', '-e', PERF_EVENTS, '-p', String(pid)])),
          );
          const sw0 = p.procs.map(([, pid]) => threadSwitches(pid));
          const t0 = p.procs.map(([, pid]) => processTimes(pid));
          await run();
          const sw1 = p.procs.map(([, pid]) => threadSwitches(pid));
          const t1 = p.procs.map(([, pid]) => processTimes(pid));
          const perfOut = await Promise.all(perfs.map((t) => t.stop()));
          let asyncs: (Record<string, number> | undefined)[] = p.procs.map(() => undefined);
          if (withAsync) {
            const before = await Promise.all(p.procs.map(([, pid]) => asyncCounts(pid)));
            await run();
            const after = await Promise.all(p.procs.map(([, pid]) => asyncCounts(pid)));
            asyncs = after.map((a, i) =>
              Object.fromEntries(Object.entries(a).map(([k, v]) => [k, v - (before[i]![k] ?? 0)])),
            );
          }
          for (const [i, [name, pid]] of p.procs.entries()) {
            const byTid = parseStraceLines(readFileSync(files[i]!, 'utf8'));
            rmSync(files[i]!, { force: true });
            columns.push({
              name,
              main: byTid.get(pid) ?? emptyCalls(),
              others: sumCalls([...byTid].filter(([tid]) => tid !== pid).map(([, c]) => c)),
              perf: parsePerfStat(perfOut[i]!),
              async: asyncs[i],
              switches: switchesPerRequest(sw0[i]!, sw1[i]!, requests),
              times: [t1[i]![0] - t0[i]![0], t1[i]![1] - t0[i]![1]],
            });
          }
        } finally {
          await Promise.all(loads.map(({ load }) => load.close()));
        }
      }
    },
    'chain',
  );
  const per = (n: number) => fmtNum(n / requests, 2);
  const rows: string[][] = [
    ['main: polls, zero timeout', ...columns.map((c) => per(c.main.pollsZero))],
    ['  … that returned events', ...columns.map((c) => per(c.main.pollsZeroWithEvents))],
    [
      '  … that found nothing and did not block (forced turns)',
      ...columns.map((c) => per(c.main.forcedTurns)),
    ],
    ['main: polls, blocking', ...columns.map((c) => per(c.main.pollsBlocking))],
    ['  … that returned events', ...columns.map((c) => per(c.main.pollsBlockingWithEvents))],
    [
      'main: events per poll with events',
      ...columns.map((c) =>
        fmtNum(c.main.events / Math.max(1, c.main.pollsZeroWithEvents + c.main.pollsBlockingWithEvents), 2),
      ),
    ],
    [
      'main: read (of which empty)',
      ...columns.map((c) => `${per(c.main.reads)} (${per(c.main.readsEmpty)})`),
    ],
    ['main: write, writev', ...columns.map((c) => `${per(c.main.writes)}, ${per(c.main.writevs)}`)],
    ['main: futex', ...columns.map((c) => per(c.main.futex))],
    ['main: sleeps (voluntary switches, no strace)', ...columns.map((c) => fmtNum(c.switches.voluntary, 2))],
    ['main: preempted (involuntary switches)', ...columns.map((c) => fmtNum(c.switches.involuntary, 2))],
    [
      'other threads: futex, polls',
      ...columns.map((c) => `${per(c.others.futex)}, ${per(c.others.pollsZero + c.others.pollsBlocking)}`),
    ],
  ];
  for (const e of PERF_EVENTS.split(','))
    rows.push([
      e === 'task-clock' ? 'task-clock µs (perf stat)' : `${e} (perf stat)`,
      ...columns.map((c) => {
        const v = c.perf.get(e);
        if (v === undefined) return '-';
        return e === 'task-clock' ? fmtNum((v * 1000) / requests, 1) : per(v);
      }),
    ]);
  rows.push([
    'user / system µs (/proc, 10 ms ticks)',
    ...columns.map(
      (c) => `${fmtNum((c.times[0] * 1e6) / requests, 0)} / ${fmtNum((c.times[1] * 1e6) / requests, 0)}`,
    ),
  ]);
  if (withAsync) {
    const types = [...new Set(columns.flatMap((c) => Object.keys(c.async ?? {})))].sort();
    for (const t of types)
      if (columns.some((c) => (c.async?.[t] ?? 0) / requests >= 0.005))
        rows.push([`async ${t}`, ...columns.map((c) => per(c.async?.[t] ?? 0))]);
  }
  process.stdout.write(
    `Loop polls and system calls per request (${requests} requests at ${rate} req/s, ${burst} at a time, up to ${connections} connections per path; ${together ? 'both paths at once' : 'one path at a time'}${pin ? `; the four gateways pinned to CPU ${pin.target}` : ''}; perf stat and async counts in runs of their own)\n\n` +
      `${markdownTable(['per request', ...columns.map((c) => c.name)], rows, ['left', ...columns.map(() => 'right' as const)])}\n`,
  );
}

if (import.meta.main) runMain('mesh-wakeups', main);
