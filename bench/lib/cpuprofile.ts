/**
 * Summary of a V8 .cpuprofile (what `node --cpu-prof` writes): self time per function and per
 * module (node internals, npm package, or source file), optionally limited to a time window so
 * start-up and shutdown do not blur the picture of the steady state under load.
 */
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
    children?: number[];
  }[];
  /** Microseconds, on the same monotonic clock as process.hrtime (Linux: CLOCK_MONOTONIC). */
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  name: string;
  selfMs: number;
  /** Share of the busy (non-idle) time in the window, in percent. */
  pct: number;
}

export interface ProfileSummary {
  windowMs: number;
  busyMs: number;
  idleMs: number;
  /** The window requested was outside the profile, so the whole profile was used. */
  wholeProfile: boolean;
  functions: SelfTime[];
  modules: SelfTime[];
  /** Coarse split: V8/native, Node core, undici, the project's own code, telemetry libraries, other deps. */
  groups: SelfTime[];
}

const TELEMETRY_PACKAGES =
  /^(@opentelemetry\/|prom-client$|pino$|pino-std-serializers$|sonic-boom$|thread-stream$|tdigest$|bintrees$)/;

/** Which coarse group a module (as named by moduleOf, or a V8 pseudo-frame) belongs to. */
export function groupOf(module: string): string {
  if (module === '(garbage collector)') return 'GC';
  if (module.startsWith('(')) return 'native (syscalls, V8 builtins, (program))';
  if (module.startsWith('node:') || module.startsWith('wasm://'))
    return 'Node core (http, streams, timers, llhttp)';
  if (module === 'undici') return 'undici';
  if (TELEMETRY_PACKAGES.test(module)) return 'telemetry libraries (OTel, prom-client, pino)';
  if (module.startsWith('src/')) return 'project code (src/, bench/)';
  if (module.startsWith('bench/')) return 'project code (src/, bench/)';
  return 'other dependencies';
}

/** A profile frame's URL as a file path (a `file:` URL converted; anything else as it is). */
function pathOf(url: string): string {
  if (!url.startsWith('file:')) return url;
  try {
    return fileURLToPath(url);
  } catch {
    return url;
  }
}

/** "node:internal/streams/writable" → "node:streams"; a node_modules path → its package. */
export function moduleOf(url: string, root: string): string {
  if (!url) return '(native)';
  if (url.startsWith('node:')) {
    const rest = url.slice(5).replace(/^internal\//, '');
    return `node:${rest.split('/')[0]}`;
  }
  const path = pathOf(url);
  const nm = path.lastIndexOf('/node_modules/');
  if (nm !== -1) {
    const parts = path.slice(nm + '/node_modules/'.length).split('/');
    return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!;
  }
  return path.startsWith(root) ? relative(root, path) : path;
}

function where(url: string, line: number, root: string): string {
  if (!url) return '';
  const path = pathOf(url);
  const nm = path.lastIndexOf('/node_modules/');
  const short =
    nm !== -1
      ? path.slice(nm + '/node_modules/'.length)
      : path.startsWith(root)
        ? relative(root, path)
        : path;
  return `${short}:${line + 1}`;
}

/**
 * Self time per function and per module. Each sample is charged the time until the next sample.
 * `window` ([from, to] in µs on the profile's clock) keeps only the samples inside it.
 */
export function summariseProfile(
  p: CpuProfile,
  root: string,
  window?: [number, number],
  top = 25,
): ProfileSummary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  let [from, to] = window ?? [p.startTime, p.endTime];
  const wholeProfile = to <= p.startTime || from >= p.endTime;
  if (wholeProfile) [from, to] = [p.startTime, p.endTime];
  const fn = new Map<string, number>();
  const mod = new Map<string, number>();
  const grp = new Map<string, number>();
  let busy = 0;
  let idle = 0;
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    const dur = p.timeDeltas[i + 1] ?? 0;
    if (t < from || t > to) continue;
    const node = byId.get(p.samples[i]!);
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === '(idle)') {
      idle += dur;
      continue;
    }
    busy += dur;
    const name = `${functionName || '(anonymous)'} ${where(url, lineNumber, root)}`.trim();
    fn.set(name, (fn.get(name) ?? 0) + dur);
    const m = functionName.startsWith('(') && !url ? functionName : moduleOf(url, root);
    mod.set(m, (mod.get(m) ?? 0) + dur);
    const g = groupOf(m);
    grp.set(g, (grp.get(g) ?? 0) + dur);
  }
  const rank = (m: Map<string, number>): SelfTime[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, selfMs: us / 1000, pct: busy ? (us / busy) * 100 : 0 }));
  return {
    windowMs: (to - from) / 1000,
    busyMs: busy / 1000,
    idleMs: idle / 1000,
    wholeProfile,
    functions: rank(fn),
    modules: rank(mod),
    groups: rank(grp),
  };
}
