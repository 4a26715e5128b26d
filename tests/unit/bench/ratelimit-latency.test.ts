import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { affinityOf, pinPlan } from '../../../bench/lib/pin.ts';
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
