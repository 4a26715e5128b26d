/**
 * Reading a sampling heap profile (V8's `HeapProfiler.stopSampling`, the `.heapprofile` Chrome
 * DevTools opens) for bench/allocations.ts: the bytes in it, and the bytes by call site.
 */

export interface HeapProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  /** Bytes allocated by this frame itself (V8 scales the samples to an estimate of all of them). */
  selfSize: number;
  children: HeapProfileNode[];
}

/** Every byte the profile holds. */
export function totalBytes(node: HeapProfileNode): number {
  let n = node.selfSize;
  for (const c of node.children) n += totalBytes(c);
  return n;
}

/**
 * Bytes by call site, named `function file:line` (the function's first line; `strip` is taken off
 * the front of file paths): where each was allocated (`self`), and the nearest frame above that
 * `isOwn` accepts (`own`; `outside` when there is none), so a library's allocation on the
 * project's behalf is counted against the project's call that caused it.
 */
export function bytesBySite(
  head: HeapProfileNode,
  isOwn: (url: string) => boolean,
  strip: readonly string[] = [],
  outside = '(outside own code)',
): { self: Map<string, number>; own: Map<string, number> } {
  const self = new Map<string, number>();
  const own = new Map<string, number>();
  const name = (f: HeapProfileNode['callFrame']): string => {
    let file = f.url.replace(/^file:\/\//, '');
    for (const s of strip) if (file.startsWith(s)) file = file.slice(s.length);
    return `${f.functionName || '(anonymous)'} ${file ? `${file}:${f.lineNumber + 1}` : '(native)'}`;
  };
  const walk = (node: HeapProfileNode, nearestOwn: string): void => {
    const site = name(node.callFrame);
    const ownSite = isOwn(node.callFrame.url) ? site : nearestOwn;
    if (node.selfSize > 0) {
      self.set(site, (self.get(site) ?? 0) + node.selfSize);
      own.set(ownSite, (own.get(ownSite) ?? 0) + node.selfSize);
    }
    for (const c of node.children) walk(c, ownSite);
  };
  walk(head, outside);
  return { self, own };
}

/** The `n` largest entries, largest first. */
export function largest(map: ReadonlyMap<string, number>, n: number): [string, number][] {
  return [...map].sort((a, b) => b[1] - a[1]).slice(0, n);
}
