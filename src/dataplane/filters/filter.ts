import type { RequestContext } from '../context.ts';

/**
 * One stage of a route's pipeline. Built once per route when a snapshot is compiled by a factory
 * `createX(config)` that validates and precomputes; `onRequest` does only per-request work.
 *
 * `onRequest` returns undefined when it finished synchronously (the common case: cached
 * verification) and a Promise only when it must wait (e.g. a JWKS fetch). It rejects a request by
 * throwing (or rejecting with) a GatewayError; it may set fields on the context (identity, claims,
 * headers to add upstream) and record a decision with `ctx.decide()`.
 */
export interface RequestFilter {
  readonly name: string;
  onRequest(ctx: RequestContext): undefined | Promise<void>;
  /** Release timers, caches, connections. Safe to call twice. */
  close?(): void;
}
