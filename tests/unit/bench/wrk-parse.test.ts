import { describe, expect, it } from 'vitest';
import { parseWrkCount, parseWrkOutput, parseWrkTime } from '../../../bench/lib/wrk.ts';

// Captured from wrk debian/4.1.0-3+b2 on the bench machine: `wrk -t1 -c50 -d3s --latency` against
// bench/peers/upstream.ts.
const CLEAN = `Running 3s test @ http://127.0.0.1:39411/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.82ms    5.09ms 120.99ms   94.00%
    Req/Sec    26.36k    11.70k   43.78k    60.00%
  Latency Distribution
     50%    1.26ms
     75%    2.97ms
     90%    5.99ms
     99%   19.73ms
  79287 requests in 3.05s, 18.37MB read
Requests/sec:  26022.54
Transfer/sec:      6.03MB
`;

// Captured the same way against a misbehaving server: 503 to every third request, a reset every
// hundredth, some answers held 2.5 s. Note the sub-millisecond p50 printed in "us".
const WITH_ERRORS = `Running 3s test @ http://127.0.0.1:39413/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.89ms   25.46ms 253.41ms   95.58%
    Req/Sec    14.38k     9.44k   32.15k    53.57%
  Latency Distribution
     50%  708.00us
     75%    2.43ms
     90%    8.79ms
     99%  157.91ms
  40544 requests in 3.02s, 5.26MB read
  Socket errors: connect 0, read 410, write 0, timeout 7
  Non-2xx or 3xx responses: 13531
Requests/sec:  13439.18
Transfer/sec:      1.74MB
`;

// What wrk prints when nothing listens on the port (exit status 1).
const REFUSED = 'unable to connect to 127.0.0.1:39412 Connection refused\n';

describe('parseWrkOutput', () => {
  it('reads throughput, counts and the latency distribution of a clean run', () => {
    const r = parseWrkOutput(CLEAN);
    expect(r.tool).toBe('wrk');
    expect(r.rps).toBe(26022.54);
    expect(r.requests).toBe(79287);
    expect(r.durationS).toBeCloseTo(3.05, 6);
    expect(r.latencyMs.avg).toBeCloseTo(2.82, 6);
    expect(r.latencyMs.max).toBeCloseTo(120.99, 6);
    expect(r.latencyMs.p50).toBeCloseTo(1.26, 6);
    expect(r.latencyMs.p75).toBeCloseTo(2.97, 6);
    expect(r.latencyMs.p90).toBeCloseTo(5.99, 6);
    expect(r.latencyMs.p99).toBeCloseTo(19.73, 6);
    expect(r.errors).toEqual({ connect: 0, read: 0, write: 0, timeout: 0 });
    expect(r.non2xx3xx).toBe(0);
  });

  it('reads socket errors, non-2xx responses and microsecond latencies', () => {
    const r = parseWrkOutput(WITH_ERRORS);
    expect(r.rps).toBe(13439.18);
    expect(r.requests).toBe(40544);
    expect(r.latencyMs.p50).toBeCloseTo(0.708, 6);
    expect(r.latencyMs.p99).toBeCloseTo(157.91, 6);
    expect(r.errors).toEqual({ connect: 0, read: 410, write: 0, timeout: 7 });
    expect(r.non2xx3xx).toBe(13531);
  });

  it('throws with the output when wrk produced no result', () => {
    expect(() => parseWrkOutput(REFUSED)).toThrow(/no result.*Connection refused/s);
  });

  it('throws when run without --latency (no percentiles)', () => {
    const withoutDistribution = CLEAN.replace(/ {2}Latency Distribution[\s\S]*?(?= {2}79287)/, '');
    expect(withoutDistribution).not.toContain('99%');
    expect(() => parseWrkOutput(withoutDistribution)).toThrow(/--latency/);
  });
});

describe('parseWrkTime', () => {
  it.each([
    ['708.00us', 0.708],
    ['1.26ms', 1.26],
    ['2.00s', 2000],
    ['1.50m', 90_000],
    ['1.00h', 3_600_000],
  ])('%s is %d ms', (text, ms) => {
    expect(parseWrkTime(text)).toBeCloseTo(ms, 9);
  });

  it('rejects a value without a unit', () => {
    expect(() => parseWrkTime('12')).toThrow(/cannot parse/);
  });
});

describe('parseWrkCount', () => {
  it.each([
    ['26022.54', 26022.54],
    ['43.78k', 43780],
    ['1.20M', 1_200_000],
  ])('%s is %d', (text, n) => {
    expect(parseWrkCount(text)).toBeCloseTo(n, 6);
  });
});
