/**
 * CPU time of a process tree from /proc/<pid>/stat (utime + stime), to tell how busy the target
 * and the upstream were during a run and how much CPU the target spent per request: on a small
 * shared machine that is a steadier measure of proxy cost than req/s. Linux only.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { processTree } from './rss.ts';
import { threadSwitches } from './switches.ts';

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

/**
 * Starts a window over one process's CPU split as the kernel accounts it: user (its own code) and
 * system (its syscalls, and the softirq work that ran on their way: on loopback, the receiving
 * side's TCP work and wakeup), in % of one core, and its threads' voluntary context switches per
 * second (each one a wait that ended in a wakeup). `end()` is undefined when the process is gone.
 */
export function cpuSplitWindow(
  pid: number,
): () => { userPct: number; systemPct: number; switchesPerS: number } | undefined {
  const read = () => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      let switches = 0;
      for (const tid of readdirSync(`/proc/${pid}/task`)) {
        switches += threadSwitches(pid, Number(tid)).voluntary;
      }
      return { user: Number(f[11]), system: Number(f[12]), switches };
    } catch {
      return undefined;
    }
  };
  const start = read();
  const t0 = performance.now();
  return () => {
    const end = read();
    const wallS = (performance.now() - t0) / 1000;
    if (start === undefined || end === undefined || wallS <= 0) return undefined;
    const pct = (ticks: number) => (ticks * 100) / clockTicks() / wallS;
    return {
      userPct: pct(end.user - start.user),
      systemPct: pct(end.system - start.system),
      switchesPerS: (end.switches - start.switches) / wallS,
    };
  };
}

/** /proc/stat's first line in ms: busy (user+nice+system), softirq+irq, steal. */
function machineMs(): { busy: number; softirq: number; steal: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const [, user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = line
      .trim()
      .split(/\s+/)
      .map(Number);
    const ms = (ticks: number) => (ticks * 1000) / clockTicks();
    return { busy: ms(user + nice + system), softirq: ms(irq + softirq), steal: ms(steal) };
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

/** Where the machine's CPU went during a window, in % of one core (2 cores: up to 200). */
export interface MachineCpu {
  /** user + nice + system of the whole machine. */
  machinePct: number;
  /** The bench itself and its reaped children (wrk, once it has exited). */
  benchPct: number;
  /** The bench's long-lived processes (target, upstream, sink). */
  processesPct: number;
  /** Interrupt and softirq time: mostly the kernel's loopback TCP work for the bench's traffic. */
  softirqPct: number;
  /**
   * Everything else: processes that are not the bench's (other users' test runs, including ones
   * that started and ended inside the window), kernel threads, and VM steal.
   */
  foreignPct: number;
}

/**
 * Starts a window over the machine's CPU; `end()` (call it after wrk has exited) splits it into
 * the bench's processes (`ours()`: the roots of its long-lived process trees), the bench itself
 * with wrk, interrupts, and the rest.
 */
export function machineCpuWindow(ours: () => readonly number[]): () => MachineCpu | undefined {
  const procs = () => {
    let sum = 0;
    for (const pid of new Set(ours())) {
      const ms = treeCpuMs(pid);
      if (ms === undefined) return undefined;
      sum += ms;
    }
    return sum;
  };
  const m0 = machineMs();
  const s0 = selfAndReapedCpuMs();
  const p0 = procs();
  const t0 = performance.now();
  return () => {
    const m1 = machineMs();
    const s1 = selfAndReapedCpuMs();
    const p1 = procs();
    const wall = performance.now() - t0;
    if (
      !m0 ||
      !m1 ||
      s0 === undefined ||
      s1 === undefined ||
      p0 === undefined ||
      p1 === undefined ||
      wall <= 0
    ) {
      return undefined;
    }
    const pct = (ms: number) => (ms / wall) * 100;
    const machinePct = pct(m1.busy - m0.busy);
    const benchPct = pct(s1 - s0);
    const processesPct = pct(p1 - p0);
    return {
      machinePct,
      benchPct,
      processesPct,
      softirqPct: pct(m1.softirq - m0.softirq),
      foreignPct: Math.max(0, machinePct - benchPct - processesPct) + pct(m1.steal - m0.steal),
    };
  };
}

/**
 * Wait (at most `maxWaitMs`) until processes that are not the bench's use less than
 * `thresholdPct` of one core over a one-second sample: other users' work on a small shared
 * machine skews a run badly.
 */
export async function waitForQuiet(
  ours: () => readonly number[],
  thresholdPct: number,
  maxWaitMs: number,
): Promise<{ waitedMs: number; foreignPct: number | undefined }> {
  const t0 = performance.now();
  for (;;) {
    const window = machineCpuWindow(ours);
    await new Promise((r) => setTimeout(r, 1000));
    const foreignPct = window()?.foreignPct;
    const waitedMs = performance.now() - t0;
    if (foreignPct === undefined || foreignPct < thresholdPct || waitedMs >= maxWaitMs)
      return { waitedMs, foreignPct };
  }
}
