/**
 * Resident memory of a process tree, sampled from /proc while it is under load. The tree is the
 * process and its descendants (nginx: master + worker); RSS of the members is summed, so pages
 * they share are counted more than once. Linux only: elsewhere every sample is undefined.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** VmRSS of one process in KiB, or undefined when it is gone or /proc is absent. */
export function readRssKiB(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Direct children of `pid`, from /proc/<pid>/task/<tid>/children (all threads). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
        if (text) for (const c of text.split(/\s+/)) out.push(Number(c));
      } catch {
        // thread ended meanwhile
      }
    }
  } catch {
    // process ended
  }
  return out;
}

/** `pid` and all its descendants. */
export function processTree(pid: number): number[] {
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) tree.push(...childrenOf(tree[i]!));
  return tree;
}

/** Summed VmRSS of a process tree in KiB, or undefined when the root is gone. */
export function treeRssKiB(pid: number): number | undefined {
  const root = readRssKiB(pid);
  if (root === undefined) return undefined;
  let sum = root;
  for (const p of processTree(pid).slice(1)) sum += readRssKiB(p) ?? 0;
  return sum;
}

/** Samples a process tree's RSS every `intervalMs` until stopped; keeps the maximum. */
export class RssSampler {
  readonly pid: number;
  #timer: NodeJS.Timeout | undefined;
  #maxKiB = 0;
  #samples = 0;

  constructor(pid: number, intervalMs = 250) {
    this.pid = pid;
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), intervalMs);
  }

  #sample(): void {
    const kib = treeRssKiB(this.pid);
    if (kib === undefined) return;
    this.#samples++;
    if (kib > this.#maxKiB) this.#maxKiB = kib;
  }

  /** Stop sampling; the largest RSS seen in MB (MiB: KiB / 1024), undefined if never read. */
  stop(): { maxMB: number | undefined; samples: number } {
    this.#sample();
    clearInterval(this.#timer);
    this.#timer = undefined;
    return { maxMB: this.#samples ? this.#maxKiB / 1024 : undefined, samples: this.#samples };
  }
}
