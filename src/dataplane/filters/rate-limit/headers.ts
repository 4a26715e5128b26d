/**
 * The response fields a rate limit policy sends: `RateLimit-Policy` and `RateLimit` as
 * draft-ietf-httpapi-ratelimit-headers-11 defines them (Structured Field lists whose items are
 * quoted policy names with parameters: `"api";q=100;w=60` and `"api";r=42;t=17`), `Retry-After`
 * on a refusal, and optionally the older `X-RateLimit-Limit/-Remaining/-Reset` trio.
 */
import type { LimitResult } from './counters.ts';
import type { LimitConfig } from './schema.ts';

/** Seconds until a result's window (or block) ends, rounded up; what `t` and Retry-After say. */
export function secondsToReset(result: LimitResult): number {
  const ms = result.res.msBeforeNext;
  return ms > 0 ? Math.ceil(ms / 1000) : 0;
}

/** Points left under a result's limit. */
export function remainingOf(result: LimitResult): number {
  return result.over ? 0 : Math.max(0, result.res.remainingPoints);
}

/** A policy's limits as the fields name them, precomputed. */
export class RateLimitFields {
  /** Item names, one per limit: the limit's `name`, else the policy's (with `/<w>s` when it has several limits). */
  readonly names: readonly string[];
  /** The RateLimit-Policy items of the policy, joined: the same on every response. */
  readonly policyField: string;
  readonly #quoted: readonly string[];
  readonly #points: readonly number[];

  constructor(policy: string, limits: readonly LimitConfig[]) {
    this.names = limits.map((l) => l.name ?? (limits.length === 1 ? policy : `${policy}/${l.duration}s`));
    this.#quoted = this.names.map((n) => `"${n}"`);
    this.#points = limits.map((l) => l.points);
    this.policyField = limits.map((l, i) => `${this.#quoted[i]};q=${l.points};w=${l.duration}`).join(', ');
  }

  /** The RateLimit items of one decision; limits without a result (store failed, fail-open) are left out. */
  rateLimitField(results: readonly (LimitResult | undefined)[]): string {
    let field = '';
    for (let i = 0; i < results.length; i++) {
      const r = results[i];
      if (r === undefined) continue;
      if (field.length > 0) field += ', ';
      field += `${this.#quoted[i]};r=${remainingOf(r)};t=${secondsToReset(r)}`;
    }
    return field;
  }

  /**
   * X-RateLimit-Limit, -Remaining and -Reset (delta seconds) of the nearest limit: the one with
   * the fewest points left (the longest wait among equals). Undefined when no limit answered.
   */
  legacyFields(results: readonly (LimitResult | undefined)[]): [string, string, string] | undefined {
    let best = -1;
    for (let i = 0; i < results.length; i++) {
      const r = results[i];
      if (r === undefined) continue;
      const b = best < 0 ? undefined : results[best]!;
      if (
        b === undefined ||
        remainingOf(r) < remainingOf(b) ||
        (remainingOf(r) === remainingOf(b) && secondsToReset(r) > secondsToReset(b))
      )
        best = i;
    }
    if (best < 0) return undefined;
    const r = results[best]!;
    return [String(this.#points[best]), String(remainingOf(r)), String(secondsToReset(r))];
  }
}

/** Retry-After of a refusal: the longest wait among the limits that refused, at least 1 second. */
export function retryAfterOf(results: readonly (LimitResult | undefined)[]): number {
  let wait = 1;
  for (const r of results) if (r?.over) wait = Math.max(wait, secondsToReset(r));
  return wait;
}
