import { describe, expect, it } from 'vitest';
import { bytesBySite, type HeapProfileNode, largest, totalBytes } from '../../../bench/lib/heap-profile.ts';

function node(
  functionName: string,
  url: string,
  selfSize: number,
  children: HeapProfileNode[] = [],
): HeapProfileNode {
  return { callFrame: { functionName, url, lineNumber: 9 }, selfSize, children };
}

// (root) → handle (own) → write (library) → native; (root) → tick (library)
const PROFILE = node('(root)', '', 0, [
  node('handle', 'file:///app/src/handle.ts', 100, [
    node('write', 'file:///app/node_modules/lib/w.js', 40, [node('Uint8Array', '', 7)]),
  ]),
  node('tick', 'node:internal/process/task_queues', 30),
]);

describe('heap profile', () => {
  it('totals every frame', () => {
    expect(totalBytes(PROFILE)).toBe(177);
  });

  it('counts bytes where allocated, and against the nearest own frame above', () => {
    const { self, own } = bytesBySite(PROFILE, (url) => url.includes('/app/src/'), ['/app/'], 'outside');
    expect(Object.fromEntries(self)).toEqual({
      'handle src/handle.ts:10': 100,
      'write node_modules/lib/w.js:10': 40,
      'Uint8Array (native)': 7,
      'tick node:internal/process/task_queues:10': 30,
    });
    expect(Object.fromEntries(own)).toEqual({ 'handle src/handle.ts:10': 147, outside: 30 });
    expect(largest(own, 1)).toEqual([['handle src/handle.ts:10', 147]]);
  });
});
