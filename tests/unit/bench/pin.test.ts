import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { affinityOf, groupThreads, pinPlan, pinTarget, statProcessGroup } from '../../../bench/lib/pin.ts';
import { pinContestant, redisCpuFromEnv } from '../../../bench/lib/ratelimit-latency.ts';

const children: number[] = [];
afterEach(() => {
  for (const pid of children.splice(0)) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

describe('bench CPU pinning (BENCH_PIN)', () => {
  it('is off unless asked for, and refuses what it cannot do', () => {
    expect(pinPlan({})).toBeUndefined();
    expect(pinPlan({ BENCH_PIN: '0' })).toBeUndefined();
    expect(pinPlan({ BENCH_PIN: '' })).toBeUndefined();
    expect(() => pinPlan({ BENCH_PIN: 'yes' })).toThrow(/must be 0 or 1/);
    expect(() => pinPlan({ BENCH_PIN: '1' }, 1)).toThrow(/at least 2 CPUs/);
    expect(pinPlan({ BENCH_PIN: '1' }, 2)).toMatchObject({ target: '1', rest: '0' });
    expect(pinPlan({ BENCH_PIN: '1' }, 8)).toMatchObject({ target: '7', rest: '0-6' });
  });

  it('reads the process group from a stat line whose command has spaces and parentheses', () => {
    expect(statProcessGroup('4242 (a (b) c) S 1 4240 4240 0 -1 4194560 0')).toBe(4240);
  });

  it.runIf(availableParallelism() >= 2)(
    "pins every thread of the target's process group, children included",
    async () => {
      const plan = pinPlan({ BENCH_PIN: '1' })!;
      // A detached shell (its own process group) with a child of its own, like nginx's workers.
      const child = spawn('sh', ['-c', 'sleep 30 & sleep 30; wait'], { detached: true, stdio: 'ignore' });
      children.push(child.pid!);
      let tids: number[] = [];
      for (let i = 0; i < 50 && tids.length < 3; i++) {
        await new Promise((r) => setTimeout(r, 20));
        tids = groupThreads(child.pid!);
      }
      expect(tids.length).toBe(3);
      pinTarget(plan, child.pid!);
      expect(tids.map((t) => affinityOf(plan, t))).toEqual([plan.target, plan.target, plan.target]);
      expect(tids).not.toContain(process.pid);
    },
  );
});

function sleeper(): number {
  const child = spawn('sleep', ['30'], { detached: true, stdio: 'ignore' });
  children.push(child.pid!);
  return child.pid!;
}

describe("the rate-limit latency group's Redis placement (BENCH_RL_REDIS_CPU)", () => {
  it('defaults to the target CPU and refuses anything but target or rest', () => {
    expect(redisCpuFromEnv({})).toBe('target');
    expect(redisCpuFromEnv({ BENCH_RL_REDIS_CPU: 'rest' })).toBe('rest');
    expect(() => redisCpuFromEnv({ BENCH_RL_REDIS_CPU: '1' })).toThrow(/target or rest/);
  });

  it.runIf(availableParallelism() >= 2)(
    "pins the target's Redis with it (target), or leaves it with the bench (rest)",
    () => {
      const plan = pinPlan({ BENCH_PIN: '1' })!;
      for (const where of ['target', 'rest'] as const) {
        const [gateway, redis] = [sleeper(), sleeper()];
        const before = affinityOf(plan, redis);
        pinContestant(plan, { pid: gateway, companions: [redis] }, where);
        expect(affinityOf(plan, gateway)).toBe(plan.target);
        expect(affinityOf(plan, redis)).toBe(where === 'target' ? plan.target : before);
      }
    },
  );
});
