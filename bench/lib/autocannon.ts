/**
 * Fallback load generator when wrk is not installed: autocannon's programmatic API. It runs inside
 * the bench process (JavaScript, several times wrk's CPU per request), so it takes more of the
 * shared cores from the target; numbers from it are not comparable with wrk's.
 */
import { createRequire } from 'node:module';
import type { LoadOptions, LoadResult } from './load.ts';

interface Histogram {
  average: number;
  max: number;
  total: number;
  p50: number;
  p75: number;
  p90: number;
  p99: number;
}

interface AutocannonResult {
  requests: Histogram;
  latency: Histogram;
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  statusCodeStats?: Record<string, { count: number }>;
}

type Autocannon = (opts: {
  url: string;
  connections: number;
  duration: number;
  timeout?: number;
  headers?: Record<string, string>;
  tlsOptions?: { ca?: string };
}) => Promise<AutocannonResult>;

export async function runAutocannon(url: string, opts: LoadOptions): Promise<LoadResult> {
  const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;
  const r = await autocannon({
    url,
    connections: opts.connections,
    duration: opts.durationS,
    timeout: 5,
    ...(opts.headers ? { headers: { ...opts.headers } } : {}),
    ...(opts.ca ? { tlsOptions: { ca: opts.ca } } : {}),
  });
  // Count like wrk: statuses ≥ 400 are failures (autocannon's non2xx also counts 1xx and 3xx).
  let failed = 0;
  for (const [code, { count }] of Object.entries(r.statusCodeStats ?? {})) {
    if (Number(code) >= 400) failed += Number(count);
  }
  return {
    tool: 'autocannon',
    requests: r.requests.total,
    durationS: r.duration,
    rps: r.requests.average,
    latencyMs: {
      avg: r.latency.average,
      max: r.latency.max,
      p50: r.latency.p50,
      p75: r.latency.p75,
      p90: r.latency.p90,
      p99: r.latency.p99,
    },
    errors: { connect: r.errors - r.timeouts, read: 0, write: 0, timeout: r.timeouts },
    non2xx3xx: r.statusCodeStats ? failed : r.non2xx,
  };
}
