import { type UpstreamConfig, UpstreamSchema } from '../../../src/config/schema.ts';
import { Endpoint } from '../../../src/dataplane/upstream/endpoint.ts';

/** A parsed upstream config: every default applied, as the gateway would see it. */
export function upstream(input: Record<string, unknown> = {}): UpstreamConfig {
  return UpstreamSchema.parse({ endpoints: ['http://127.0.0.1:1'], ...input });
}

const BASE = upstream();

/** `n` endpoints on distinct loopback origins (nothing listens; their pools never connect). */
export function endpoints(n: number, weights: readonly number[] = []): Endpoint[] {
  return Array.from(
    { length: n },
    (_, i) =>
      new Endpoint({ url: `http://127.0.0.${(i % 250) + 1}:${10000 + i}`, weight: weights[i] ?? 1 }, BASE),
  );
}

export async function closeAll(list: readonly Endpoint[]): Promise<void> {
  await Promise.all(list.map((e) => e.close()));
}

/** A clock the test moves by hand. */
export class ManualClock {
  t = 1_000;
  readonly now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

/** Deterministic uniform [0, 1) (mulberry32). */
export function seededRandom(seed = 42): () => number {
  let a = seed >>> 0;
  return function random(): number {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Count how often each endpoint id comes out of `n` calls. */
export function tally(n: number, pick: (i: number) => Endpoint | undefined): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const e = pick(i);
    const id = e?.id ?? 'none';
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}
