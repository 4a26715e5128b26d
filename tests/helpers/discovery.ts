/** For tests of endpoints that come and go: one route to one upstream, steady traffic, cleanup. */
import type { ConfigInput } from '../../src/config/schema.ts';
import { startGateway, type TestGateway } from './gateway.ts';
import { startUpstream, type TestUpstream } from './upstream.ts';

/**
 * One route (`/`) to one upstream `svc` with these fields (its endpoint source), round robin and no
 * retries, so a failed attempt is a failed request.
 */
export function svc(upstream: Record<string, unknown>): Partial<ConfigInput> {
  return {
    upstreams: {
      svc: { balancer: { kind: 'round_robin' }, retries: { maxAttempts: 1 }, ...upstream } as never,
    },
    routes: [{ name: 'svc', match: { path: '/' }, upstream: 'svc' }],
  };
}

/** Requests `url` from `workers` sequential loops until `stop()`; every status is kept (0: no answer). */
export function steadyLoad(url: string, workers: number): { stop(): Promise<number[]> } {
  const statuses: number[] = [];
  let running = true;
  const loops = Array.from({ length: workers }, async () => {
    while (running) {
      try {
        const res = await fetch(url);
        await res.arrayBuffer();
        statuses.push(res.status);
      } catch {
        statuses.push(0);
      }
    }
  });
  return {
    async stop() {
      running = false;
      await Promise.all(loops);
      return statuses;
    },
  };
}

/** How many requests for exactly `path` an upstream has seen. */
export const served = (u: TestUpstream, path: string): number =>
  u.requests.filter((r) => r.url === path).length;

/** What a test opens (upstreams, gateways, anything with close()), closed last first by `closeAll()`. */
export function opener(): {
  track<T extends { close(): Promise<void> }>(o: T): T;
  upstreams(n: number): Promise<TestUpstream[]>;
  gateway(input: Partial<ConfigInput>, opts?: Parameters<typeof startGateway>[1]): Promise<TestGateway>;
  closeAll(): Promise<void>;
} {
  const opened: { close(): Promise<void> }[] = [];
  return {
    track(o) {
      opened.push(o);
      return o;
    },
    async upstreams(n) {
      const list = await Promise.all(Array.from({ length: n }, () => startUpstream()));
      opened.push(...list);
      return list;
    },
    async gateway(input, opts) {
      const g = await startGateway(input, opts);
      opened.push(g);
      return g;
    },
    async closeAll() {
      for (const o of opened.splice(0).reverse()) await o.close();
    },
  };
}
