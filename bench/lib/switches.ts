/**
 * A thread's context switches from /proc, read without tracing: voluntary ones are the times it
 * slept (an event loop's main thread: a blocking poll or a futex wait that had to wait), involuntary
 * ones the times the scheduler took the CPU from it. Per request, over a window, they say how often
 * a process was woken for its requests, at any load (bench/mesh-wakeups.ts, bench/lib/mesh-cpu.ts).
 */
import { readFileSync } from 'node:fs';

export interface Switches {
  voluntary: number;
  involuntary: number;
}

/** `/proc/<pid>/task/<tid>/status`'s switch counters (the main thread: `tid` = `pid`). */
export function parseSwitches(status: string): Switches {
  const get = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? Number.NaN);
  return { voluntary: get('voluntary_ctxt_switches'), involuntary: get('nonvoluntary_ctxt_switches') };
}

export function threadSwitches(pid: number, tid: number = pid): Switches {
  return parseSwitches(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'));
}

/** Switches from `before` to `after`, per request. */
export function switchesPerRequest(before: Switches, after: Switches, requests: number): Switches {
  return {
    voluntary: (after.voluntary - before.voluntary) / requests,
    involuntary: (after.involuntary - before.involuntary) / requests,
  };
}
