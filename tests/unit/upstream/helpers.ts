import { type UpstreamConfig, UpstreamSchema } from '../../../src/config/schema.ts';
import { Cluster, type ClusterDeps } from '../../../src/dataplane/upstream/cluster.ts';
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

/** Every balancer kind, with the settings it needs. */
export const BALANCER_KINDS = [
  { kind: 'round_robin' },
  { kind: 'least_request' },
  { kind: 'peak_ewma' },
  { kind: 'consistent_hash', hashOn: { source: 'header', name: 'x-key' } },
] as const;

/** Loopback origins nothing listens on (pools never connect). */
export const ORIGINS = {
  A: 'http://127.0.0.1:9001',
  B: 'http://127.0.0.1:9002',
  C: 'http://127.0.0.1:9003',
  D: 'http://127.0.0.1:9004',
  E: 'http://127.0.0.1:9005',
} as const;

/**
 * Clusters named `svc` with a seeded random, kept until `destroyAll()` (call it after each test).
 */
export function clusterFactory(): {
  make(input: Record<string, unknown>, deps?: ClusterDeps): Cluster;
  destroyAll(): Promise<void>;
} {
  const open: Cluster[] = [];
  return {
    make(input, deps = {}) {
      const c = new Cluster('svc', upstream(input), { random: seededRandom(), ...deps });
      open.push(c);
      return c;
    },
    async destroyAll() {
      await Promise.all(open.splice(0).map((c) => c.destroy()));
    },
  };
}

/** A retry decision's input for a TLS failure before any byte went out (add `attempt` and `tried`). */
export const TLS_FAILURE = {
  method: 'GET',
  outcome: 'tls_error',
  status: 0,
  bytesSent: false,
  bodyReplayable: true,
  elapsedMs: 1,
} as const;
