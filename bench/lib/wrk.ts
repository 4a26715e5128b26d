/**
 * wrk runner and parser of its `--latency` output. wrk prints durations with a unit (us, ms, s,
 * m, h) and counts with a metric suffix (k, M, G); the parser turns them into milliseconds and
 * plain numbers. Note wrk (unlike wrk2) is closed-loop: latency percentiles are of the requests it
 * sent, with coordinated omission, which is fine for comparing targets under the same load.
 */
import type { LoadOptions, LoadResult } from './load.ts';
import { spawnManaged } from './proc.ts';

const TIME_UNITS_MS: Record<string, number> = { us: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const COUNT_SUFFIX: Record<string, number> = { '': 1, k: 1e3, M: 1e6, G: 1e9 };

/** "708.00us" → 0.708, "1.26ms" → 1.26, "2.50s" → 2500. */
export function parseWrkTime(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(text.trim());
  if (!m) throw new Error(`wrk: cannot parse duration ${JSON.stringify(text)}`);
  return Number(m[1]) * TIME_UNITS_MS[m[2]!]!;
}

/** "40.12k" → 40120, "26022.54" → 26022.54. */
export function parseWrkCount(text: string): number {
  const m = /^([\d.]+)([kMG]?)$/.exec(text.trim());
  if (!m) throw new Error(`wrk: cannot parse number ${JSON.stringify(text)}`);
  return Number(m[1]) * COUNT_SUFFIX[m[2]!]!;
}

/** Parse the output of `wrk --latency`; throws when it has no result (e.g. connection refused). */
export function parseWrkOutput(text: string): LoadResult {
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(text);
  const total = /^\s*(\d+) requests in ([\d.]+\w+),/m.exec(text);
  const latency = /^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)/m.exec(text);
  if (!rps || !total || !latency) {
    throw new Error(`wrk: no result in output:\n${text.trim()}`);
  }
  const pct = (p: number): number | undefined => {
    const m = new RegExp(`^\\s*${p}%\\s+(\\S+)`, 'm').exec(text);
    return m ? parseWrkTime(m[1]!) : undefined;
  };
  const p50 = pct(50);
  const p99 = pct(99);
  if (p50 === undefined || p99 === undefined) {
    throw new Error('wrk: no latency distribution in output (run wrk with --latency)');
  }
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  return {
    tool: 'wrk',
    requests: Number(total[1]),
    durationS: parseWrkTime(total[2]!) / 1000,
    rps: Number(rps[1]),
    latencyMs: {
      avg: parseWrkTime(latency[1]!),
      max: parseWrkTime(latency[3]!),
      p50,
      p75: pct(75),
      p90: pct(90),
      p99,
    },
    errors: {
      connect: sock ? Number(sock[1]) : 0,
      read: sock ? Number(sock[2]) : 0,
      write: sock ? Number(sock[3]) : 0,
      timeout: sock ? Number(sock[4]) : 0,
    },
    non2xx3xx: non2xx ? Number(non2xx[1]) : 0,
  };
}

/** wrk's arguments: `-t<threads> -c<connections> -d<duration>s --timeout 5s [-H 'name: value']… --latency <url>`. */
export function wrkArgs(url: string, opts: LoadOptions): string[] {
  const headers = Object.entries(opts.headers ?? {}).flatMap(([name, value]) => ['-H', `${name}: ${value}`]);
  return [
    `-t${opts.threads ?? 1}`,
    `-c${opts.connections}`,
    `-d${opts.durationS}s`,
    '--timeout',
    '5s',
    ...headers,
    '--latency',
    url,
  ];
}

/** Run wrk (see wrkArgs), killed if it overruns. */
export async function runWrk(wrkPath: string, url: string, opts: LoadOptions): Promise<LoadResult> {
  const args = wrkArgs(url, opts);
  const proc = spawnManaged('wrk', wrkPath, args);
  const watchdog = setTimeout(() => void proc.stop(1000), (opts.durationS + 20) * 1000);
  const exit = await proc.closed;
  clearTimeout(watchdog);
  if (exit.code !== 0) throw new Error(`wrk exited ${exit.code ?? exit.signal}:\n${proc.output()}`);
  return parseWrkOutput(proc.output());
}
