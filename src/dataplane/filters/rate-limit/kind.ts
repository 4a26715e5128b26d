/**
 * The `rate_limit` policy kind (docs/rate-limiting.md): points per window, counted by a key, in
 * memory or in the shared Redis. On routes it is a stage of the chain; on upstreams
 * (`upstreams.<name>.policies`) it is a ceiling asked at admission. Its state, the counters, is
 * one per policy, shared by every place that lists it (one budget unless `per` says otherwise)
 * and kept across reloads while its configuration is unchanged.
 */
import type { PolicyKind } from '../filter.ts';
import { RateLimitStage, scopeOf } from './rate-limit-filter.ts';
import { RateLimiter } from './rate-limiter.ts';
import {
  checkRateLimitPlacement,
  checkRateLimitPolicy,
  type RateLimitConfig,
  RateLimitSchema,
} from './schema.ts';

export const rateLimitPolicy: PolicyKind<RateLimitConfig, RateLimiter> = {
  kind: 'rate_limit',
  schema: RateLimitSchema,
  onePerRoute: false,
  denials: ['RATE_LIMITED', 'RATE_LIMIT_KEY_MISSING', 'RATE_LIMIT_UNAVAILABLE'],
  check(settings, config, path, issues) {
    checkRateLimitPolicy(settings, config, path, issues);
  },
  checkPlacement(settings, place, path, issues) {
    checkRateLimitPlacement(settings, place, path, issues);
  },
  createState(policy, env) {
    return new RateLimiter(policy.name, policy.config, {
      metrics: env.metrics.rateLimits,
      logger: env.logger,
      redis: env.redis,
    });
  },
  create(policy, route, _env, limiter, upstream) {
    return new RateLimitStage(limiter, scopeOf(policy.config.per, route, upstream));
  },
  createGate(policy, upstream, _env, limiter) {
    return new RateLimitStage(limiter, scopeOf(policy.config.per, undefined, upstream));
  },
};
