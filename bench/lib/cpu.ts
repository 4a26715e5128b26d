/**
 * CPU time of a process tree from /proc/<pid>/stat (utime + stime), to tell how busy the target
 * and the upstream were during a run and how much CPU the target spent per request: on a small
 * shared machine that is a steadier measure of proxy cost than req/s. Linux only.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { processTree } from './rss.ts';

let ticksPerSecond: number | undefined;

function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/** user + system CPU of one process in ms, or undefined when it is gone. */
export function cpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    return (ticks * 1000) / clockTicks();
  } catch {
    return undefined;
  }
}

/** Summed CPU ms of a process and its descendants. */
export function treeCpuMs(pid: number): number | undefined {
  const root = cpuMs(pid);
  if (root === undefined) return undefined;
  let sum = root;
  for (const p of processTree(pid).slice(1)) sum += cpuMs(p) ?? 0;
  return sum;
}

/** Starts a CPU measurement; `end()` returns the CPU used since, as ms and % of one core. */
export function cpuWindow(pid: number): () => { ms: number; pctOfCore: number } | undefined {
  const start = treeCpuMs(pid);
  const t0 = performance.now();
  return () => {
    const end = treeCpuMs(pid);
    const wall = performance.now() - t0;
    if (start === undefined || end === undefined || wall <= 0) return undefined;
    return { ms: end - start, pctOfCore: ((end - start) / wall) * 100 };
  };
}

/** Busy CPU of the whole machine in ms (all cores; steal included: time the VM did not get). */
export function machineBusyMs(): number | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
    return (
      (((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) * 1000) /
      clockTicks()
    );
  } catch {
    return undefined;
  }
}

/**
 * The bench process's own CPU plus that of its children it has reaped (cutime/cstime): wrk,
 * once it has exited, is counted here.
 */
export function selfAndReapedCpuMs(): number | undefined {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * 1000) / clockTicks();
  } catch {
    return undefined;
  }
}

export interface MachineCpu {
  /** Everything busy on the machine, in % of one core (2 cores: up to 200). */
  machinePct: number;
  /** The bench itself and the load generator if it is a child that exited in the window (wrk). */
  benchPct: number;
  /** The given bench processes (target, upstream, sink). */
  processesPct: number;
  /** Whatever else ran: other users' processes, the kernel's own threads, steal. */
  otherPct: number;
}

/**
 * Starts a window over the machine's CPU; `end()` (call it after wrk has exited) splits it into
 * the given processes, the bench + wrk, and everything else.
 */
export function machineCpuWindow(pids: readonly number[]): () => MachineCpu | undefined {
  const unique = [...new Set(pids)];
  const read = () => {
    const machine = machineBusyMs();
    const self = selfAndReapedCpuMs();
    const procs = unique.map(treeCpuMs);
    if (machine === undefined || self === undefined || procs.some((p) => p === undefined)) return undefined;
    return { machine, self, procs: procs.reduce((a, b) => a! + b!, 0)! };
  };
  const start = read();
  const t0 = performance.now();
  return () => {
    const end = read();
    const wall = performance.now() - t0;
    if (!start || !end || wall <= 0) return undefined;
    const pct = (ms: number) => (ms / wall) * 100;
    const machinePct = pct(end.machine - start.machine);
    const benchPct = pct(end.self - start.self);
    const processesPct = pct(end.procs - start.procs);
    return {
      machinePct,
      benchPct,
      processesPct,
      otherPct: Math.max(0, machinePct - benchPct - processesPct),
    };
  };
}

/**
 * Wait (at most `maxWaitMs`) until the machine is quiet: less than `thresholdPct` of one core busy
 * over a one-second sample. Other users' work on a small shared box skews a run badly.
 */
export async function waitForQuiet(
  thresholdPct: number,
  maxWaitMs: number,
): Promise<{ waitedMs: number; busyPct: number | undefined }> {
  const t0 = performance.now();
  let busyPct: number | undefined;
  for (;;) {
    const a = machineBusyMs();
    const s = performance.now();
    await new Promise((r) => setTimeout(r, 1000));
    const b = machineBusyMs();
    if (a === undefined || b === undefined) return { waitedMs: 0, busyPct: undefined };
    busyPct = ((b - a) / (performance.now() - s)) * 100;
    const waitedMs = performance.now() - t0;
    if (busyPct < thresholdPct || waitedMs >= maxWaitMs) return { waitedMs, busyPct };
  }
}
