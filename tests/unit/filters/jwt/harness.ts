/**
 * Shared pieces of the JWT filter tests: a request context without a socket, a runner that
 * returns what the filter did (or the AuthError it refused with), provider config with the
 * schema's defaults, and metric readers.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import pino from 'pino';
import type { Snapshot } from '../../../../src/control/snapshot.ts';
import { RequestContext } from '../../../../src/dataplane/context.ts';
import type { JwtFilter } from '../../../../src/dataplane/filters/jwt/jwt-filter.ts';
import { AuthError } from '../../../../src/dataplane/filters/jwt/reasons.ts';
import {
  type AuthConfig,
  type AuthProviderConfig,
  AuthProviderSchema,
  type RouteAuthConfig,
  RouteAuthSchema,
} from '../../../../src/dataplane/filters/jwt/schema.ts';
import { createMetrics, type GatewayMetrics } from '../../../../src/telemetry/metrics.ts';
import { AUDIENCE, ISSUER } from '../../../helpers/tokens.ts';

export const silentLogger = pino({ level: 'silent' });

export function newMetrics(): GatewayMetrics {
  return createMetrics({ exemplars: false, version: 'test' });
}

export function providerConfig(overrides: Record<string, unknown>): AuthProviderConfig {
  return AuthProviderSchema.parse({
    issuer: ISSUER,
    audiences: [AUDIENCE],
    algorithms: ['ES256', 'RS256'],
    ...overrides,
  });
}

export function authConfig(providers: Record<string, Record<string, unknown>>): AuthConfig {
  return {
    providers: Object.fromEntries(Object.entries(providers).map(([name, p]) => [name, providerConfig(p)])),
  };
}

export function routeAuth(cfg: Record<string, unknown> = {}): RouteAuthConfig {
  return RouteAuthSchema.parse(cfg);
}

/** A context whose request has `headers` and the matching `rawHeaders`, as Node builds them. */
export function makeContext(headers: IncomingHttpHeaders, sampled = true): RequestContext {
  const rawHeaders = Object.entries(headers).flatMap(([name, value]) =>
    value === undefined ? [] : (Array.isArray(value) ? value : [value]).flatMap((v) => [name, v]),
  );
  const req = { headers, rawHeaders } as IncomingMessage;
  const ctx = new RequestContext(req, {} as ServerResponse, {} as Snapshot, 0);
  ctx.sampled = sampled;
  return ctx;
}

export interface FilterRun {
  readonly ctx: RequestContext;
  readonly error: AuthError | undefined;
  /** The filter finished synchronously (cached path or an early refusal). */
  readonly sync: boolean;
  readonly ms: number;
}

export async function runFilter(
  filter: JwtFilter,
  token: string | undefined,
  extraHeaders: IncomingHttpHeaders = {},
): Promise<FilterRun> {
  const headers: IncomingHttpHeaders = { ...extraHeaders };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  const ctx = makeContext(headers);
  const started = performance.now();
  let sync = true;
  try {
    const pending = filter.onRequest(ctx);
    if (pending !== undefined) {
      sync = false;
      await pending;
    }
    return { ctx, error: undefined, sync, ms: performance.now() - started };
  } catch (err) {
    if (!(err instanceof AuthError)) throw err;
    return { ctx, error: err, sync, ms: performance.now() - started };
  }
}

/** The value of one series of `metric` in the registry, 0 when absent. */
export async function metricValue(
  metrics: GatewayMetrics,
  metric: string,
  labels: Record<string, string>,
): Promise<number> {
  const all = await metrics.registry.getMetricsAsJSON();
  const m = all.find((x) => x.name === metric);
  const v = m?.values.find((s) => Object.entries(labels).every(([k, val]) => String(s.labels[k]) === val));
  return v?.value ?? 0;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Poll until `check` holds or `timeoutMs` passes. */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await sleep(10);
  }
}
