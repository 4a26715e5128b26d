/** What one load-generator run measured, whatever the tool. */
export interface LoadResult {
  tool: 'wrk' | 'autocannon';
  /** Completed requests (any status). */
  requests: number;
  durationS: number;
  /** Requests per second over the run, as the tool reports it. */
  rps: number;
  /** Latency in milliseconds. p75/p90 and stdev are absent when the tool does not report them. */
  latencyMs: { avg: number; max: number; p50: number; p75?: number; p90?: number; p99: number };
  /** Socket-level failures. */
  errors: { connect: number; read: number; write: number; timeout: number };
  /** Responses with a status ≥ 400 (wrk: "Non-2xx or 3xx responses"). */
  non2xx3xx: number;
}

export interface LoadOptions {
  durationS: number;
  connections: number;
  /** Load-generator threads (wrk -t; autocannon workers are not used). */
  threads?: number;
  /** Headers sent with every request (e.g. `Authorization: Bearer …`). */
  headers?: Readonly<Record<string, string>>;
  /** https: the certificate to trust (autocannon verifies; wrk does not verify certificates). */
  ca?: string;
}

export function totalErrors(r: LoadResult): number {
  return r.errors.connect + r.errors.read + r.errors.write + r.errors.timeout + r.non2xx3xx;
}
