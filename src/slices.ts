/**
 * Work split at `yield` points (a config compile): run to the end at once, or in slices that let
 * the event loop serve requests in between. A slice ends at the first `yield` after `sliceMs`, so
 * the work between two yields should be small (one route, one upstream).
 */
import { setImmediate as nextTurn } from 'node:timers/promises';

/**
 * Yielded before a step that takes a few ms in one piece (sorting 10,000 routes): in slices, that
 * step starts a slice of its own rather than ending one that is nearly full.
 */
export const BIG_STEP: unique symbol = Symbol('big step');

export type Steps<T> = Generator<typeof BIG_STEP | undefined, T, void>;

/** Run `steps` to the end without giving the event loop a turn. */
export function runNow<T>(steps: Steps<T>): T {
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
  }
}

/** Run `steps`, giving the event loop a turn (setImmediate: I/O first) about every `sliceMs`. */
export async function runInSlices<T>(steps: Steps<T>, sliceMs: number): Promise<T> {
  let sliceStart = performance.now();
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
    if (step.value === BIG_STEP || performance.now() - sliceStart >= sliceMs) {
      await nextTurn();
      sliceStart = performance.now();
    }
  }
}
