/**
 * Configuration of a `rate_limit` policy: its limits (points per window, several per policy, an
 * optional burst and block), what a request is counted by (its key) and in which scope, its cost,
 * exemptions, where the counters live (memory or the shared Redis) and what happens when that
 * store fails, dry run and response headers. docs/rate-limiting.md describes every key; defaults
 * live here and nowhere else.
 */
import { z } from 'zod';
import { parseDuration } from '../../../config/duration.ts';
import { cidr, isRecord } from '../../../config/fields.ts';
import { HTTP_METHODS } from '../../../config/http-methods.ts';
import type { PolicyIssue } from '../filter.ts';
import { IDENTITY_PATTERN_RE } from '../identity/schema.ts';

/**
 * A window: whole seconds, at least one. rate-limiter-flexible counts windows in seconds (its
 * Redis limiter sets the key's expiry with `EX <seconds>`, and a window under a second would
 * never expire), and the RateLimit fields speak whole seconds too.
 */
const seconds = z
  .union([z.string(), z.number()])
  .transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === undefined || ms < 1000 || ms % 1000 !== 0) {
      ctx.addIssue({
        code: 'custom',
        message: `expected whole seconds, at least 1s (e.g. 1s, 30s, 1m, 1h), not ${JSON.stringify(v)}`,
      });
      return z.NEVER;
    }
    return ms / 1000;
  })
  .meta({ description: 'Window in whole seconds such as 1s, 1m, 1h' });

/** Names in the RateLimit fields are Structured Field strings: printable ASCII but `"` and `\`. */
const limitName = z
  .string()
  .regex(/^[A-Za-z0-9_.:/-]{1,64}$/, 'letters, digits and _ . : / - (at most 64 characters)');

const LimitSchema = z.strictObject({
  /** Points (requests, at cost 1) admitted per window and key. */
  points: z.int().min(1).max(1_000_000_000),
  /** The window. Each key's window starts with its first request (not on the clock's minute). */
  duration: seconds,
  /** Once over the limit, the key stays refused this long (instead of to the window's end). */
  blockDuration: seconds.optional(),
  /**
   * Extra points a key may spend once `points` are used up, over a window of their own (usually
   * longer): rate-limiter-flexible's BurstyRateLimiter.
   */
  burst: z
    .strictObject({
      points: z.int().min(1).max(1_000_000_000),
      duration: seconds,
    })
    .optional(),
  /** This limit's name in the RateLimit fields; default: the policy's name, with `/<window>s` when it has several limits. */
  name: limitName.optional(),
});

/**
 * What a request is counted by. `address`: the client's address (through trusted proxies'
 * X-Forwarded-For); `identity`: the verified mTLS identity; `claim:<path>`: a claim of the
 * verified JWT (a jwt policy runs first); `header:<name>`: a request header (the client chooses
 * it: see docs/rate-limiting.md).
 */
export const KEY_PART_RE = /^(address|identity|claim:[^\s.]+(\.[^\s.]+)*|header:[A-Za-z0-9!#$%&'*+^_`|~-]+)$/;

const keyPart = z
  .string()
  .regex(KEY_PART_RE, 'address, identity, claim:<name or dotted path>, or header:<name>')
  .transform((p) => (p.startsWith('header:') ? p.toLowerCase() : p));

const KeySchema = z
  .union([z.literal('none'), keyPart, z.array(keyPart).max(4)])
  .default(['address'])
  .transform((k) => (k === 'none' ? [] : typeof k === 'string' ? [k] : k))
  .meta({
    description:
      'address | identity | claim:<path> | header:<name>, or a list of them (a combination); none: one budget for the whole scope',
  });

const identityPattern = z
  .string()
  .max(2048)
  .regex(
    IDENTITY_PATTERN_RE,
    'expected a URI such as spiffe://prod.example/ns/ops/sa/probe, or one ending in /*',
  );

/**
 * About 10 MB per limit at this many keys (bytes per key measured in
 * bench/micro/memory-window-keys.ts, docs/rate-limiting.md), and more distinct clients per window
 * than one replica usually serves.
 */
export const DEFAULT_MAX_KEYS = 100_000;

export const DEGRADATIONS = ['insurance', 'fail-open', 'fail-closed'] as const;
export type Degradation = (typeof DEGRADATIONS)[number];

const StoreSchema = z
  .discriminatedUnion('type', [
    /** Counters in this process: exact, not shared with other replicas. */
    z.strictObject({ type: z.literal('memory') }),
    /** Counters in the shared Redis (the top-level `redis` section): one budget across replicas. */
    z.strictObject({
      type: z.literal('redis'),
      /** The longest a request waits for Redis (all its limits at once); then the degradation decides. */
      timeout: z
        .union([z.string(), z.number()])
        .default('50ms')
        .transform((v, ctx) => {
          const ms = parseDuration(v);
          if (ms === undefined || ms < 1 || ms > 1000) {
            ctx.addIssue({ code: 'custom', message: `expected 1ms to 1s, not ${JSON.stringify(v)}` });
            return z.NEVER;
          }
          return ms;
        })
        .meta({ description: 'Per-request bound on waiting for Redis (default 50ms, at most 1s)' }),
      /**
       * When Redis fails or is slow: `insurance` counts in memory with each limit divided by
       * `replicas`; `fail-open` admits; `fail-closed` refuses with 503. Never 429.
       */
      onError: z.enum(DEGRADATIONS).default('insurance'),
      /** The number of gateway replicas sharing this policy: the insurance budget is each limit divided by it. */
      replicas: z.int().min(1).max(10_000).optional(),
    }),
  ])
  .prefault({ type: 'memory' });

const CostSchema = z
  .union([
    z.int().min(0).max(1_000_000),
    z.strictObject({
      /** Points a request costs. */
      default: z.int().min(0).max(1_000_000).default(1),
      /** Points by method, for the methods that cost something else. */
      methods: z.partialRecord(z.enum(HTTP_METHODS), z.int().min(0).max(1_000_000)).default({}),
    }),
  ])
  .default(1);

export const RateLimitSchema = z
  .strictObject({
    /** One or more limits; a request must fit in every one. */
    limits: z.array(LimitSchema).min(1, 'list at least one limit').max(8),
    /** What a request is counted by: its key. */
    limitBy: KeySchema,
    /** A request without the key's value: counted by its address instead, refused (403), or not counted. */
    ifMissing: z.enum(['address', 'reject', 'skip']).default('address'),
    /**
     * One budget for every route and upstream listing the policy (`policy`), or one per route or
     * per upstream. Never multiplied silently: a shared policy shares its budget.
     */
    per: z.enum(['policy', 'route', 'upstream']).default('policy'),
    /** Points a request costs: a number, or `{ default, methods }`. A WebSocket handshake costs as a GET. */
    cost: CostSchema,
    /** Requests that are never counted nor limited. */
    exempt: z
      .strictObject({
        /** Verified mTLS identities (exact, or `prefix/*`). */
        identities: z.array(identityPattern).default([]),
        /** Client addresses or CIDRs (the address as `limitBy: address` reads it). */
        addresses: z.array(cidr).default([]),
      })
      .optional(),
    store: StoreSchema,
    /**
     * The most keys each limit holds in memory at once (the memory store, and a Redis store's
     * insurance): a new key beyond it takes the place of the key whose window began first.
     * docs/rate-limiting.md says how to size it.
     */
    maxKeys: z.int().min(1).max(100_000_000).default(DEFAULT_MAX_KEYS),
    /** Count, log and report decisions, but refuse nothing (and send no RateLimit fields). */
    dryRun: z.boolean().default(false),
    headers: z
      .strictObject({
        /** RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers-11). */
        standard: z.boolean().default(true),
        /** X-RateLimit-Limit, -Remaining, -Reset (delta seconds) of the nearest limit. */
        legacy: z.boolean().default(false),
      })
      .prefault({}),
  })
  .superRefine((cfg, ctx) => {
    const windows = new Set<number>();
    const names = new Set<string>();
    cfg.limits.forEach((l, i) => {
      if (windows.has(l.duration))
        ctx.addIssue({
          code: 'custom',
          path: ['limits', i, 'duration'],
          message: 'another limit of this policy has the same window (one limit per window)',
        });
      windows.add(l.duration);
      if (l.name !== undefined) {
        if (names.has(l.name))
          ctx.addIssue({ code: 'custom', path: ['limits', i, 'name'], message: 'duplicate limit name' });
        names.add(l.name);
      }
    });
    const store = cfg.store;
    if (store.type === 'redis' && store.onError === 'insurance' && store.replicas === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['store', 'replicas'],
        message:
          'insurance needs the number of gateway replicas sharing this policy (each counts limit/replicas while Redis is down)',
      });
  });

export type RateLimitConfig = z.output<typeof RateLimitSchema>;
export type LimitConfig = RateLimitConfig['limits'][number];

/** Checks against the rest of the config: a Redis store needs the top-level `redis` section. */
export function checkRateLimitPolicy(
  settings: unknown,
  config: Readonly<Record<string, unknown>>,
  path: (string | number)[],
  issues: PolicyIssue[],
): void {
  if (!isRecord(settings) || !isRecord(settings.store) || settings.store.type !== 'redis') return;
  if (config.redis === undefined)
    issues.push({
      path: [...path, 'store', 'type'],
      message: 'a Redis store needs the top-level redis section (the shared connection)',
    });
}

function keyParts(settings: Record<string, unknown>): string[] {
  const key = settings.limitBy;
  if (typeof key === 'string') return [key];
  return Array.isArray(key) ? key.filter((k): k is string => typeof k === 'string') : [];
}

/**
 * Checks that depend on where the policy is listed. On a route: a key on a JWT claim needs a jwt
 * policy earlier in the chain (claims are set by it). On an upstream: `per: route` has no route.
 */
export function checkRateLimitPlacement(
  settings: unknown,
  place: { readonly before: readonly string[] } | { readonly upstream: string },
  path: (string | number)[],
  issues: PolicyIssue[],
): void {
  if (!isRecord(settings)) return;
  if ('upstream' in place) {
    if (settings.per === 'route')
      issues.push({
        path,
        message: 'a policy with per: route cannot apply to an upstream (use per: upstream or per: policy)',
      });
    return;
  }
  if (place.before.includes('jwt')) return;
  const claim = keyParts(settings).find((k) => k.startsWith('claim:'));
  if (claim !== undefined)
    issues.push({
      path,
      message: `its key ${claim} reads the verified JWT: list a jwt policy (or auth:) before it on this route`,
    });
}
