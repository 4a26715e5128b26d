import { describe, expect, it } from 'vitest';
import { isoTime } from '../../../src/registry/iso-time.ts';

describe('isoTime', () => {
  it('writes what Date#toISOString writes', () => {
    const now = Date.now();
    const times = [
      0,
      1,
      999,
      1000,
      now,
      now + 15_000,
      now - 86_400_000 * 400,
      Date.UTC(2028, 1, 29, 23, 59, 59, 999),
      Date.UTC(2100, 2, 1),
      253_402_300_799_999,
    ];
    // Times that share slots, and each second's milliseconds in turn.
    for (let i = 0; i < 2000; i++) times.push(now + i * 7919, now - i * 104_729 + (i % 1000));
    for (const t of times) expect(isoTime(t), String(t)).toBe(new Date(t).toISOString());
  });

  it('leaves what its plain form cannot write to Date (negative, past 9999, fractional)', () => {
    for (const t of [-1, -62_198_755_200_000, 253_402_300_800_000, 1.5])
      expect(isoTime(t)).toBe(new Date(t).toISOString());
    expect(() => isoTime(Number.NaN)).toThrow(RangeError);
  });
});
