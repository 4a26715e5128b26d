/**
 * One JWKS fetch over HTTP(S), bounded in every direction: a total timeout covering connect, TLS,
 * headers and body (so a black-holed endpoint costs at most `timeout`), a maximum body size, no
 * redirects (a 3xx is a failure: a redirect could move key fetching to a host nobody configured),
 * conditional requests with the last ETag, and the response's Cache-Control max-age.
 *
 * jose's createRemoteJWKSet is not used: its cache, cooldown and error handling are what this
 * feature is about (stale-if-error, max-age bounds, per-outcome metrics, readiness), so they are
 * written out here and in jwks-cache.ts.
 */
import { Agent } from 'undici';
import type { JwksFetchOutcome } from '../../../telemetry/metrics.ts';

export interface JwksResponse {
  readonly outcome: 'success' | 'not_modified';
  /** Parsed JSON body (success only). */
  readonly body: unknown;
  readonly etag: string | undefined;
  /** Freshness from Cache-Control max-age minus Age, in ms; undefined when the response gave none. */
  readonly maxAge: number | undefined;
}

export type JwksFailureOutcome = Exclude<JwksFetchOutcome, 'success' | 'not_modified'>;

/** A failed fetch; `message` is short, made here, and safe for logs and the admin view. */
export class JwksFetchError extends Error {
  readonly outcome: JwksFailureOutcome;

  constructor(outcome: JwksFailureOutcome, message: string) {
    super(message);
    this.name = 'JwksFetchError';
    this.outcome = outcome;
  }
}

/** Fetches the JWKS; `etag` is sent as If-None-Match. Rejects with JwksFetchError only. */
export interface JwksFetcher {
  fetch(etag: string | undefined): Promise<JwksResponse>;
  close(): Promise<void>;
}

export interface HttpJwksFetcherOptions {
  /** Whole fetch, ms. */
  readonly timeout: number;
  /** Largest body accepted, bytes. */
  readonly maxResponseSize: number;
}

const MAX_AGE_RE = /(?:^|,)\s*max-age\s*=\s*"?(\d+)"?\s*(?:,|$)/i;
const NO_CACHE_RE = /(?:^|,)\s*(?:no-cache|no-store)\s*(?:,|$)/i;

/** Freshness lifetime in ms from Cache-Control and Age (RFC 9111 §4.2); 0 for no-cache/no-store. */
export function freshnessOf(cacheControl: string | undefined, age: string | undefined): number | undefined {
  if (cacheControl === undefined) return undefined;
  if (NO_CACHE_RE.test(cacheControl)) return 0;
  const m = MAX_AGE_RE.exec(cacheControl);
  if (m === null) return undefined;
  const ageSeconds = age !== undefined && /^\d+$/.test(age) ? Number(age) : 0;
  return Math.max(0, Number(m[1]) - ageSeconds) * 1000;
}

function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

function describeError(err: unknown, timedOut: boolean, timeout: number): JwksFetchError {
  if (err instanceof JwksFetchError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (
    timedOut ||
    code === 'UND_ERR_CONNECT_TIMEOUT' ||
    code === 'UND_ERR_HEADERS_TIMEOUT' ||
    code === 'UND_ERR_BODY_TIMEOUT'
  ) {
    return new JwksFetchError('timeout', `no complete response within ${timeout} ms`);
  }
  return new JwksFetchError(
    'error',
    typeof code === 'string' ? `request failed (${code})` : 'request failed',
  );
}

/** Drop a response body; undici reports the abort as an 'error' event, which is expected here. */
function discard(body: { on(event: 'error', listener: () => void): unknown; destroy(): unknown }): void {
  body.on('error', ignore);
  body.destroy();
}

function ignore(): void {}

/** A fetcher with its own connection pool, so closing a provider closes its connections. */
export function createHttpJwksFetcher(uri: string, opts: HttpJwksFetcherOptions): JwksFetcher {
  const url = new URL(uri);
  const path = `${url.pathname}${url.search}`;
  const agent = new Agent({
    connect: { timeout: opts.timeout },
    headersTimeout: opts.timeout,
    bodyTimeout: opts.timeout,
    connections: 2,
    keepAliveTimeout: 10_000,
  });

  async function fetchJwks(etag: string | undefined): Promise<JwksResponse> {
    const signal = AbortSignal.timeout(opts.timeout);
    try {
      const res = await agent.request({
        origin: url.origin,
        path,
        method: 'GET',
        headers: {
          accept: 'application/jwk-set+json, application/json;q=0.9',
          ...(etag === undefined ? {} : { 'if-none-match': etag }),
        },
        signal,
      });
      const { statusCode, headers, body } = res;
      if (statusCode === 304 && etag !== undefined) {
        discard(body);
        return {
          outcome: 'not_modified',
          body: undefined,
          etag,
          maxAge: freshnessOf(header(headers, 'cache-control'), header(headers, 'age')),
        };
      }
      if (statusCode >= 300 && statusCode < 400) {
        discard(body);
        throw new JwksFetchError('redirect', `redirect (${statusCode}) not followed`);
      }
      if (statusCode !== 200) {
        discard(body);
        throw new JwksFetchError('http_error', `HTTP ${statusCode}`);
      }
      const declared = Number(header(headers, 'content-length'));
      if (declared > opts.maxResponseSize) {
        discard(body);
        throw new JwksFetchError('too_large', `response larger than ${opts.maxResponseSize} bytes`);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > opts.maxResponseSize) {
          discard(body);
          throw new JwksFetchError('too_large', `response larger than ${opts.maxResponseSize} bytes`);
        }
        chunks.push(chunk);
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(Buffer.concat(chunks, size).toString('utf8'));
      } catch {
        throw new JwksFetchError('invalid', 'response is not JSON');
      }
      return {
        outcome: 'success',
        body: parsed,
        etag: header(headers, 'etag'),
        maxAge: freshnessOf(header(headers, 'cache-control'), header(headers, 'age')),
      };
    } catch (err) {
      throw describeError(err, signal.aborted, opts.timeout);
    }
  }

  return {
    fetch: fetchJwks,
    async close(): Promise<void> {
      await agent.destroy().catch(() => undefined);
    },
  };
}
