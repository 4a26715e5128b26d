import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { randomRequestId, requestIdOf } from '../../src/request-id.ts';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function request(id?: string | string[]): IncomingMessage {
  return { headers: id === undefined ? {} : { 'x-request-id': id } } as unknown as IncomingMessage;
}

describe('request ids', () => {
  it('makes version 4 UUIDs, all different, across refills of the random pool', () => {
    const ids = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const id = randomRequestId();
      expect(id).toMatch(UUID_V4);
      ids.add(id);
    }
    expect(ids.size).toBe(2000);
  });

  it('uses every hex digit in every random position', () => {
    // 122 random bits: over 2000 ids each free position sees each of its values.
    const seen = Array.from({ length: 36 }, () => new Set<string>());
    for (let i = 0; i < 2000; i++) {
      const id = randomRequestId();
      for (let c = 0; c < 36; c++) seen[c]!.add(id[c]!);
    }
    for (const c of [8, 13, 18, 23]) expect([...seen[c]!]).toEqual(['-']);
    expect([...seen[14]!]).toEqual(['4']);
    expect([...seen[19]!].sort()).toEqual(['8', '9', 'a', 'b']);
    for (let c = 0; c < 36; c++) if (![8, 13, 14, 18, 19, 23].includes(c)) expect(seen[c]!.size).toBe(16);
  });

  it('keeps a tame client id and replaces any other with a UUID', () => {
    expect(requestIdOf(request('abc-123._:x'))).toBe('abc-123._:x');
    expect(requestIdOf(request('has space'))).toMatch(UUID_V4);
    expect(requestIdOf(request('x'.repeat(129)))).toMatch(UUID_V4);
    expect(requestIdOf(request(['a', 'b']))).toMatch(UUID_V4);
    expect(requestIdOf(request())).toMatch(UUID_V4);
  });
});
