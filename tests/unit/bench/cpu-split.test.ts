import { describe, expect, it } from 'vitest';
import { cpuSplitWindow } from '../../../bench/lib/cpu.ts';

describe('cpuSplitWindow', () => {
  it("reads a process's user time and its threads' waits from /proc", async () => {
    const end = cpuSplitWindow(process.pid);
    // User time: 200 ms of this process's CPU (however long the shared machine takes to give it)
    // spans dozens of the kernel's ticks.
    const start = process.cpuUsage();
    let x = 0;
    while (process.cpuUsage(start).user < 200_000) for (let i = 0; i < 10_000; i++) x += Math.sqrt(x + 1);
    expect(x).toBeGreaterThan(0);
    // Waits: each timer the event loop sleeps for ends in a wakeup (a voluntary switch).
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    const split = end();
    expect(split).toBeDefined();
    expect(split!.userPct).toBeGreaterThan(0);
    expect(split!.systemPct).toBeGreaterThanOrEqual(0);
    expect(split!.switchesPerS).toBeGreaterThan(0);
  });

  it('is undefined for a process that is gone', () => {
    // Linux's pid_max is at most 2^22: this pid never exists.
    expect(cpuSplitWindow(2 ** 22 + 1)()).toBeUndefined();
  });
});
