import { describe, expect, it } from 'vitest';
import { BIG_STEP, runInSlices, runNow, type Steps } from '../../src/slices.ts';

function* count(n: number, log: number[]): Steps<number> {
  for (let i = 0; i < n; i++) {
    log.push(i);
    yield;
  }
  return n;
}

function* failing(): Steps<number> {
  yield;
  throw new Error('step failed');
}

describe('steps', () => {
  it('runNow runs every step at once', () => {
    const log: number[] = [];
    expect(runNow(count(5, log))).toBe(5);
    expect(log).toEqual([0, 1, 2, 3, 4]);
  });

  it('runInSlices gives the event loop a turn when a slice is used up, and returns the result', async () => {
    const log: number[] = [];
    const seen: number[] = [];
    let running = true;
    const tick = (): void => {
      seen.push(log.length);
      if (running) setImmediate(tick);
    };
    setImmediate(tick);
    expect(await runInSlices(count(50, log), 0)).toBe(50);
    running = false;
    // Other callbacks ran between the steps, not only before or after them.
    expect(seen.filter((n) => n > 0 && n < 50).length).toBeGreaterThan(10);
  });

  it('a long slice runs many steps per turn', async () => {
    const log: number[] = [];
    let turns = 0;
    let running = true;
    const tick = (): void => {
      turns++;
      if (running) setImmediate(tick);
    };
    setImmediate(tick);
    await runInSlices(count(1000, log), 60_000);
    running = false;
    expect(turns).toBeLessThan(5);
  });

  it('a big step starts a slice of its own, however long the slice', async () => {
    const log: string[] = [];
    function* steps(): Steps<void> {
      log.push('small');
      yield;
      log.push('small');
      yield BIG_STEP;
      log.push('big');
      yield;
      log.push('small');
    }
    let running = true;
    const tick = (): void => {
      log.push('turn');
      if (running) setImmediate(tick);
    };
    setImmediate(tick);
    await runInSlices(steps(), 60_000);
    running = false;
    // One turn, between the small steps and the big one: none within the long slice otherwise.
    expect(log).toEqual(['small', 'small', 'turn', 'big', 'small']);
    expect(runNow(steps())).toBeUndefined();
  });

  it('a step that throws rejects', async () => {
    await expect(runInSlices(failing(), 0)).rejects.toThrow('step failed');
    expect(() => runNow(failing())).toThrow('step failed');
  });
});
