/**
 * BENCH_PIN=1: the target on a CPU of its own (the last one), and everything else (the bench, the
 * load generator, the upstream, the OTLP sink) on the others. Unpinned, the scheduler spreads the
 * target, wrk and the upstream over the same two cores: the target's req/s then depends on where
 * its neighbours happened to run, and a target that needs half the CPU of another shows far less
 * than twice its req/s, because the load generator and upstream take a fixed share per request.
 * Pinned, the target is limited by its own core, so req/s ratios come close to the ratios of CPU
 * per request; the loopback traffic's kernel work still lands on both sides.
 *
 * Affinity is set with taskset (util-linux) on every thread of the target's process group once it
 * is ready; threads it starts later inherit it. The bench pins itself before starting anything,
 * so its children inherit the other CPUs.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { findExecutable } from './proc.ts';

export interface PinPlan {
  /** taskset's CPU list for the target, e.g. `1`. */
  readonly target: string;
  /** taskset's CPU list for the rest, e.g. `0` or `0-2`. */
  readonly rest: string;
  readonly taskset: string;
}

/** The plan BENCH_PIN asks for; undefined when it is unset or `0`. Throws when it cannot be done. */
export function pinPlan(env: NodeJS.ProcessEnv, cpus: number = availableParallelism()): PinPlan | undefined {
  const raw = env.BENCH_PIN;
  if (raw === undefined || raw === '' || raw === '0') return undefined;
  if (raw !== '1') throw new Error(`BENCH_PIN must be 0 or 1, not ${JSON.stringify(raw)}`);
  if (cpus < 2) throw new Error(`BENCH_PIN=1 needs at least 2 CPUs; this machine has ${cpus}`);
  const taskset = findExecutable('taskset', ['/usr/bin', '/bin']);
  if (!taskset) throw new Error('BENCH_PIN=1 needs taskset (Debian/Ubuntu: apt-get install util-linux)');
  return { target: String(cpus - 1), rest: cpus === 2 ? '0' : `0-${cpus - 2}`, taskset };
}

/** The process group id in a /proc/<pid>/stat line (field 5; the command name may hold spaces). */
export function statProcessGroup(stat: string): number {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[2]);
}

/** Thread ids of every process in process group `pgid` (a detached child's pid is its group id). */
export function groupThreads(pgid: number): number[] {
  const tids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (statProcessGroup(readFileSync(`/proc/${entry}/stat`, 'utf8')) !== pgid) continue;
      for (const t of readdirSync(`/proc/${entry}/task`)) tids.push(Number(t));
    } catch {
      // The process exited while we looked.
    }
  }
  return tids;
}

/** Set the CPU affinity of each thread; threads that exited meanwhile are skipped. */
export function pinThreads(plan: PinPlan, tids: readonly number[], cpus: string): number {
  let pinned = 0;
  for (const tid of tids) {
    try {
      execFileSync(plan.taskset, ['-p', '-c', cpus, String(tid)], { stdio: 'ignore' });
      pinned++;
    } catch {
      // ESRCH: gone.
    }
  }
  return pinned;
}

/** Pin this process (every thread) to the non-target CPUs; children started later inherit it. */
export function pinSelf(plan: PinPlan): void {
  const tids = readdirSync('/proc/self/task').map(Number);
  if (pinThreads(plan, tids, plan.rest) === 0)
    throw new Error('BENCH_PIN=1: taskset could not pin the bench');
}

/** Pin the target's process group to the target CPU; throws when no thread could be pinned. */
export function pinTarget(plan: PinPlan, pid: number): void {
  if (pinThreads(plan, groupThreads(pid), plan.target) === 0)
    throw new Error(`BENCH_PIN=1: taskset could not pin the target (pid ${pid})`);
}

/** The CPU list a thread may run on (taskset's view), for checks. */
export function affinityOf(plan: PinPlan, tid: number): string {
  return execFileSync(plan.taskset, ['-p', '-c', String(tid)], { encoding: 'utf8' })
    .trim()
    .split(': ')
    .pop()!;
}
