import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createHttpJwksFetcher,
  freshnessOf,
  JwksFetchError,
  type JwksFetcher,
} from '../../../../src/dataplane/filters/jwt/jwks-fetch.ts';
import { type JwksServer, startJwksServer } from '../../../helpers/jwks-server.ts';
import { createTestKey, jwksOf, type TestKey } from '../../../helpers/tokens.ts';

let server: JwksServer;
let fetcher: JwksFetcher;
let key: TestKey;

beforeAll(async () => {
  key = await createTestKey('ES256');
  server = await startJwksServer(jwksOf(key));
  fetcher = createHttpJwksFetcher(server.url, { timeout: 300, maxResponseSize: 1024 * 1024 });
});

afterAll(async () => {
  await fetcher.close();
  await server.close();
});

async function failure(p: Promise<unknown>): Promise<JwksFetchError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(JwksFetchError);
  return err as JwksFetchError;
}

describe('createHttpJwksFetcher', () => {
  it('fetches the key set with its ETag and max-age', async () => {
    server.setMode('serve');
    server.setCacheControl('public, max-age=600');
    const res = await fetcher.fetch(undefined);
    expect(res.outcome).toBe('success');
    expect(res.body).toEqual(jwksOf(key));
    expect(res.etag).toMatch(/^"\d+"$/);
    expect(res.maxAge).toBe(600_000);
    server.setCacheControl(undefined);
  });

  it('revalidates with If-None-Match (304 → not_modified)', async () => {
    const first = await fetcher.fetch(undefined);
    const before = server.notModified;
    const second = await fetcher.fetch(first.etag);
    expect(second.outcome).toBe('not_modified');
    expect(server.notModified).toBe(before + 1);
  });

  it('does not follow redirects', async () => {
    server.setMode('redirect');
    const err = await failure(fetcher.fetch(undefined));
    expect(err.outcome).toBe('redirect');
    expect(err.message).toBe('redirect (302) not followed');
    expect(server.byPath.get('/moved')).toBeUndefined();
    server.setMode('serve');
  });

  it('reports HTTP errors without the body', async () => {
    server.setMode('error');
    const err = await failure(fetcher.fetch(undefined));
    expect(err.outcome).toBe('http_error');
    expect(err.message).toBe('HTTP 500');
    server.setMode('serve');
  });

  it('refuses bodies over maxResponseSize, declared or streamed', async () => {
    for (const declared of [true, false]) {
      server.setMode('huge', { declared });
      const err = await failure(fetcher.fetch(undefined));
      expect(err.outcome).toBe('too_large');
    }
    server.setMode('serve');
    // The pool is still usable afterwards.
    expect((await fetcher.fetch(undefined)).outcome).toBe('success');
  });

  it('refuses a body that is not JSON', async () => {
    server.setMode('not-json');
    expect((await failure(fetcher.fetch(undefined))).outcome).toBe('invalid');
    server.setMode('serve');
  });

  it('gives up on a black-holed endpoint at the timeout', async () => {
    server.setMode('blackhole');
    const started = performance.now();
    const err = await failure(fetcher.fetch(undefined));
    const ms = performance.now() - started;
    expect(err.outcome).toBe('timeout');
    expect(ms).toBeGreaterThanOrEqual(280);
    expect(ms).toBeLessThan(300 + 500);
    server.setMode('serve');
  });

  it('bounds a slow endpoint by the same timeout', async () => {
    server.setMode('slow', { delayMs: 1000 });
    expect((await failure(fetcher.fetch(undefined))).outcome).toBe('timeout');
    server.setMode('slow', { delayMs: 50 });
    expect((await fetcher.fetch(undefined)).outcome).toBe('success');
    server.setMode('serve');
  });

  it('reports a refused connection', async () => {
    const other = await startJwksServer(jwksOf(key));
    const f = createHttpJwksFetcher(other.url, { timeout: 300, maxResponseSize: 1024 });
    await other.down();
    const err = await failure(f.fetch(undefined));
    expect(err.outcome).toBe('error');
    expect(err.message).toBe('request failed (ECONNREFUSED)');
    await f.close();
    await f.close();
    await other.close();
  });
});

describe('freshnessOf', () => {
  it('reads max-age minus Age; no-cache and no-store mean 0', () => {
    expect(freshnessOf(undefined, undefined)).toBeUndefined();
    expect(freshnessOf('public', undefined)).toBeUndefined();
    expect(freshnessOf('max-age=300', undefined)).toBe(300_000);
    expect(freshnessOf('public, max-age=300, must-revalidate', '100')).toBe(200_000);
    expect(freshnessOf('max-age=300', '900')).toBe(0);
    expect(freshnessOf('s-maxage=10, max-age=60', undefined)).toBe(60_000);
    expect(freshnessOf('no-cache', undefined)).toBe(0);
    expect(freshnessOf('private, no-store', undefined)).toBe(0);
    expect(freshnessOf('max-age=abc', undefined)).toBeUndefined();
  });
});
