/**
 * JwksCache timing logic with fake timers and an injected fetcher (no sockets): background
 * refresh, max-age bounds, single flight, refetch rate limit, stale-if-error, maxStale, backoff.
 */
import type { CryptoKey } from 'jose';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { JwksCache, type JwksCacheOptions } from '../../../../src/dataplane/filters/jwt/jwks-cache.ts';
import {
  JwksFetchError,
  type JwksFetcher,
  type JwksResponse,
} from '../../../../src/dataplane/filters/jwt/jwks-fetch.ts';
import { KeySet, KeySetError } from '../../../../src/dataplane/filters/jwt/key-set.ts';
import { JwksCacheSchema } from '../../../../src/dataplane/filters/jwt/schema.ts';
import type { JwksFetchOutcome } from '../../../../src/telemetry/metrics.ts';

const S = 1000;
const M = 60 * S;
const H = 60 * M;

type Behaviour = (etag: string | undefined) => Promise<JwksResponse>;

class FakeFetcher implements JwksFetcher {
  readonly calls: (string | undefined)[] = [];
  behaviour: Behaviour = ok(['a']);

  fetch(etag: string | undefined): Promise<JwksResponse> {
    this.calls.push(etag);
    return this.behaviour(etag);
  }

  async close(): Promise<void> {}
}

function ok(kids: string[], opts: { maxAge?: number; etag?: string } = {}): Behaviour {
  return async () => ({
    outcome: 'success',
    body: { kids },
    etag: opts.etag ?? `"${kids.join()}"`,
    maxAge: opts.maxAge,
  });
}

function notModified(maxAge?: number): Behaviour {
  return async (etag) => ({ outcome: 'not_modified', body: undefined, etag, maxAge });
}

function fail(outcome: 'error' | 'timeout' | 'http_error' = 'error'): Behaviour {
  return async () => {
    throw new JwksFetchError(outcome, outcome);
  };
}

function deferred(): { behaviour: Behaviour; resolve: (kids: string[]) => void } {
  let resolve!: (kids: string[]) => void;
  const p = new Promise<string[]>((r) => {
    resolve = r;
  });
  return {
    behaviour: async () => ({
      outcome: 'success',
      body: { kids: await p },
      etag: undefined,
      maxAge: undefined,
    }),
    resolve,
  };
}

function keySet(kids: string[]): KeySet {
  return new KeySet(
    kids.map((kid) => ({ kid, alg: 'ES256', key: {} as CryptoKey, fingerprint: `fp-${kid}` })),
    0,
  );
}

async function build(doc: unknown): Promise<KeySet> {
  const kids = (doc as { kids?: string[] } | undefined)?.kids;
  if (!kids || kids.length === 0) throw new KeySetError('no usable verification key in the JWKS');
  return keySet(kids);
}

let fetcher: FakeFetcher;
let fetches: JwksFetchOutcome[];
let changes: (string[] | undefined)[];
let cache: JwksCache | undefined;

function createCache(config: Record<string, unknown> = {}, extra: Partial<JwksCacheOptions> = {}): JwksCache {
  cache = new JwksCache({
    fetcher,
    build,
    config: JwksCacheSchema.parse(config),
    now: () => Date.now(),
    onFetch: (outcome) => fetches.push(outcome),
    onKeySet: (next) => changes.push(next?.kids as string[] | undefined),
    ...extra,
  });
  return cache;
}

beforeEach(() => {
  vi.useFakeTimers({ now: new Date('2026-01-01T00:00:00Z') });
  fetcher = new FakeFetcher();
  fetches = [];
  changes = [];
});

afterEach(() => {
  cache?.close();
  cache = undefined;
  vi.useRealTimers();
});

describe('JwksCache', () => {
  it('fetches at start and refreshes in the background at 90% of refreshInterval', async () => {
    const c = createCache();
    await c.start();
    await c.start();
    expect(fetcher.calls).toHaveLength(1);
    expect(c.current()?.kids).toEqual(['a']);
    await vi.advanceTimersByTimeAsync(9 * M - S);
    expect(fetcher.calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(2 * S);
    expect(fetcher.calls).toHaveLength(2);
    // Revalidation sends the ETag.
    expect(fetcher.calls[1]).toBe('"a"');
    expect(c.status().nextRefreshAt).toBe(Date.now() + 9 * M - S);
  });

  it('honours Cache-Control max-age within [minRefreshInterval, maxRefreshInterval]', async () => {
    for (const [maxAge, refreshAt] of [
      [20 * M, 18 * M],
      [10 * S, 54 * S], // below the 1 min floor
      [0, 54 * S], // no-cache
      [5 * H, 54 * M], // above the 1 h ceiling
    ] as const) {
      fetcher = new FakeFetcher();
      fetcher.behaviour = ok(['a'], { maxAge });
      const c = createCache();
      await c.start();
      await vi.advanceTimersByTimeAsync(refreshAt - 10);
      expect(fetcher.calls, `max-age ${maxAge}`).toHaveLength(1);
      await vi.advanceTimersByTimeAsync(20);
      expect(fetcher.calls, `max-age ${maxAge}`).toHaveLength(2);
      c.close();
    }
  });

  it('runs one fetch at a time: refresh and refetch join the flight in progress', async () => {
    const c = createCache();
    const d = deferred();
    fetcher.behaviour = d.behaviour;
    const p1 = c.start();
    const p2 = c.refresh();
    const p3 = c.refetch();
    expect(p2).toBe(p1);
    expect(p3).toBe(p1);
    expect(c.status().fetching).toBe(true);
    d.resolve(['a', 'b']);
    await Promise.all([p1, p2, p3]);
    expect(fetcher.calls).toHaveLength(1);
    expect(c.current()?.kids).toEqual(['a', 'b']);
  });

  it('allows an unknown-kid refetch at most once per minRefetchInterval', async () => {
    const c = createCache({ minRefetchInterval: '30s' });
    await c.start();
    expect(c.refetch()).toBeUndefined();
    await vi.advanceTimersByTimeAsync(29 * S);
    expect(c.refetch()).toBeUndefined();
    await vi.advanceTimersByTimeAsync(S);
    fetcher.behaviour = ok(['a', 'b']);
    const p = c.refetch();
    expect(p).toBeDefined();
    await p;
    expect(c.current()?.kids).toEqual(['a', 'b']);
    expect(changes).toEqual([['a'], ['a', 'b']]);
    // The window restarts from this fetch.
    await vi.advanceTimersByTimeAsync(10 * S);
    expect(c.refetch()).toBeUndefined();
    expect(fetcher.calls).toHaveLength(2);
  });

  it('keeps the last good keys when refreshes fail, reports stale after max-age, drops them at maxStale', async () => {
    const c = createCache({ maxRefreshInterval: '1h', maxStale: '2h' });
    await c.start();
    const confirmedAt = Date.now();
    fetcher.behaviour = fail('timeout');
    await vi.advanceTimersByTimeAsync(9 * M + S / 2);
    expect(fetches).toEqual(['success', 'timeout']);
    expect(c.current()?.kids).toEqual(['a']);
    expect(c.status().stale).toBe(false);
    await vi.advanceTimersByTimeAsync(M);
    const s = c.status();
    expect(s.stale).toBe(true);
    expect(s.staleAfter).toBe(confirmedAt + 10 * M);
    expect(s.lastError?.message).toBe('timeout');
    expect(c.current()?.kids).toEqual(['a']);
    // Just before maxStale: still serving.
    await vi.advanceTimersByTimeAsync(2 * H - 10 * M - 40 * S);
    expect(c.current()).toBeDefined();
    // Past it: dropped (by the next failing retry, without waiting for a request).
    await vi.advanceTimersByTimeAsync(M);
    expect(changes.at(-1)).toBeUndefined();
    expect(c.current()).toBeUndefined();
    expect(c.status().keys).toBe(0);
    // Outage cost: background retries back off to one per minRefetchInterval (30 s).
    const attempts = fetches.length - 1;
    expect(attempts).toBeLessThanOrEqual(Math.ceil((2 * H - 9 * M) / (30 * S)) + 6);
    // Recovery.
    fetcher.behaviour = ok(['b']);
    await vi.advanceTimersByTimeAsync(30 * S);
    expect(c.current()?.kids).toEqual(['b']);
  });

  it('retries a failing start with backoff from 1 s up to minRefetchInterval', async () => {
    const c = createCache({ minRefetchInterval: '30s' });
    fetcher.behaviour = fail();
    await c.start();
    const times: number[] = [];
    const t0 = Date.now();
    fetcher.behaviour = async () => {
      times.push(Date.now() - t0);
      throw new JwksFetchError('error', 'refused');
    };
    await vi.advanceTimersByTimeAsync(3 * M);
    const gaps = times.map((t, i) => t - (times[i - 1] ?? 0));
    expect(gaps.slice(0, 6)).toEqual([1 * S, 2 * S, 4 * S, 8 * S, 16 * S, 30 * S]);
    expect(new Set(gaps.slice(5))).toEqual(new Set([30 * S]));
    expect(c.current()).toBeUndefined();
  });

  it('a 304 confirms the key set (age and maxStale restart) without rebuilding it', async () => {
    const c = createCache();
    await c.start();
    const first = c.current();
    fetcher.behaviour = notModified(20 * M);
    await vi.advanceTimersByTimeAsync(9 * M);
    expect(fetches).toEqual(['success', 'not_modified']);
    expect(c.current()).toBe(first);
    expect(changes).toHaveLength(1);
    expect(c.status().confirmedAt).toBe(Date.now());
    // The 304's max-age sets the next refresh: 90% of 20 min.
    expect(c.status().nextRefreshAt).toBe(Date.now() + 18 * M);
  });

  it('keeps the previous key set when a document holds no usable key', async () => {
    const c = createCache({ minRefetchInterval: '1s' });
    await c.start();
    fetcher.behaviour = ok([]);
    await vi.advanceTimersByTimeAsync(2 * S);
    await c.refetch();
    expect(fetches).toEqual(['success', 'invalid']);
    expect(c.status().lastError?.message).toBe('no usable verification key in the JWKS');
    expect(c.current()?.kids).toEqual(['a']);
  });

  it('close stops timers and ignores a fetch in flight', async () => {
    const c = createCache();
    const d = deferred();
    fetcher.behaviour = d.behaviour;
    const p = c.start();
    c.close();
    c.close();
    d.resolve(['a']);
    await p;
    expect(c.current()).toBeUndefined();
    expect(c.refetch()).toBeUndefined();
    await c.refresh();
    await vi.advanceTimersByTimeAsync(24 * H);
    expect(fetcher.calls).toHaveLength(1);
    expect(vi.getTimerCount()).toBe(0);
  });
});
