/**
 * Picks the load generator: wrk when installed (cheap on CPU, a separate process), else
 * autocannon. BENCH_LOADGEN=wrk|autocannon forces one.
 */
import { runAutocannon } from './autocannon.ts';
import type { LoadOptions, LoadResult } from './load.ts';
import { findExecutable } from './proc.ts';
import { runWrk } from './wrk.ts';

export interface LoadGenerator {
  tool: 'wrk' | 'autocannon';
  /** e.g. "wrk 4.1.0 (-t1)" for the report. */
  label: string;
  run(url: string, opts: LoadOptions): Promise<LoadResult>;
}

export function pickLoadGenerator(forced = process.env.BENCH_LOADGEN): LoadGenerator {
  if (forced && forced !== 'wrk' && forced !== 'autocannon') {
    throw new Error(`BENCH_LOADGEN must be wrk or autocannon, not ${JSON.stringify(forced)}`);
  }
  const wrk = forced === 'autocannon' ? undefined : findExecutable('wrk', ['/usr/local/bin', '/usr/bin']);
  if (forced === 'wrk' && !wrk) throw new Error('BENCH_LOADGEN=wrk but wrk is not installed');
  if (wrk) {
    return { tool: 'wrk', label: 'wrk', run: (url, opts) => runWrk(wrk, url, opts) };
  }
  const why = forced === 'autocannon' ? 'BENCH_LOADGEN=autocannon' : 'wrk not found';
  return { tool: 'autocannon', label: `autocannon (in the bench process; ${why})`, run: runAutocannon };
}
