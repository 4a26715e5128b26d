/**
 * The event loop's turns while something runs, timed in the main thread's CPU time: what a
 * request arriving meanwhile waits for on an otherwise idle core (wall time would count what other
 * processes take on a shared machine). Linux only (/proc/thread-self/schedstat).
 */
import { readFileSync } from 'node:fs';

/**
 * The main thread's CPU time in ms, from the scheduler's own account (ns): getrusage, behind
 * process.threadCpuUsage, ticks in 4 ms steps on this VM, and wall time counts whatever other
 * processes take from this one on a shared machine.
 */
export const threadMs = (): number =>
  Number(readFileSync('/proc/thread-self/schedstat', 'latin1').split(' ')[0]) / 1e6;

/** The turns of the event loop while `run` runs (a setImmediate chain), and the longest, in ms. */
export async function turns(run: () => Promise<void>): Promise<{ turns: number; longestMs: number }> {
  let count = 0;
  let longest = 0;
  let last = threadMs();
  let running = true;
  const tick = (): void => {
    const now = threadMs();
    longest = Math.max(longest, now - last);
    last = now;
    count++;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  await run();
  running = false;
  return { turns: count, longestMs: Math.max(longest, threadMs() - last) };
}
