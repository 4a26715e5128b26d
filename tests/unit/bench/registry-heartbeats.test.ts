import { describe, expect, it } from 'vitest';
import { spreadOf, turnDifference } from '../../../bench/lib/registry-heartbeats.ts';

describe('heartbeats group: per-turn figures', () => {
  it('summarises turns by median and nearest-rank quartiles', () => {
    expect(spreadOf([4, 1, 3, 2])).toEqual({ turns: 4, median: 2.5, q1: 1, q3: 3 });
    expect(spreadOf([5])).toEqual({ turns: 1, median: 5, q1: 5, q3: 5 });
  });

  it('takes differences turn by turn, not of the medians', () => {
    // The floor's slow turn (the VM's) is the store's slow turn too: the differences stay small.
    const store = [3, 3, 9, 3, 3];
    const floor = [2, 2, 8, 2, 2];
    expect(turnDifference(store, floor)).toEqual({ turns: 5, median: 1, q1: 1, q3: 1 });
    expect(turnDifference([3, 4], [1])).toEqual({ turns: 1, median: 2, q1: 2, q3: 2 });
    expect(turnDifference([], [1])).toBeUndefined();
  });
});
