/**
 * The keys a policy's memory counters hold, as `peregrine_ratelimit_keys` reports them across a
 * reload: the newest counters of the policy are reported; closing the new ones (a reload that
 * failed after building them) leaves the old ones reported, and closing the last removes the
 * series. Evictions count into one series per policy, whichever counters made them.
 */
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { RateLimiter } from '../../../../src/dataplane/filters/rate-limit/rate-limiter.ts';
import { RateLimitSchema } from '../../../../src/dataplane/filters/rate-limit/schema.ts';
import { createMetrics, type GatewayMetrics, writeMetrics } from '../../../../src/telemetry/metrics.ts';
import { metricValue } from '../../../helpers/tls-client.ts';

let metrics: GatewayMetrics | undefined;
afterEach(() => {
  metrics?.close();
  metrics = undefined;
});

async function scrape(m: GatewayMetrics): Promise<string> {
  let text = '';
  await writeMetrics(m, undefined, (chunk) => {
    text += chunk;
  });
  return text;
}

function limiter(m: GatewayMetrics, maxKeys: number): RateLimiter {
  const config = RateLimitSchema.parse({ limits: [{ points: 5, duration: '1m' }], maxKeys });
  return new RateLimiter('p', config, {
    metrics: m.rateLimits,
    logger: pino({ enabled: false }),
    redis: undefined,
  });
}

describe('peregrine_ratelimit_keys and _evictions_total', () => {
  it('report the newest counters of a policy, until they close', async () => {
    const m = createMetrics({ exemplars: false, version: 'test' });
    metrics = m;
    const old = limiter(m, 3);
    if (old.counters.store === 'memory') for (let i = 0; i < 5; i++) old.counters.count(`a:${i}`, 1);
    let text = await scrape(m);
    expect(metricValue(text, 'peregrine_ratelimit_keys', { policy: 'p' })).toBe(3);
    expect(metricValue(text, 'peregrine_ratelimit_evictions_total', { policy: 'p' })).toBe(2);

    // A reload builds new counters (settings changed) before the old ones close.
    const next = limiter(m, 10);
    if (next.counters.store === 'memory') next.counters.count('a:new', 1);
    text = await scrape(m);
    expect(metricValue(text, 'peregrine_ratelimit_keys', { policy: 'p' })).toBe(1);
    // The reload failed: the new counters close, the old ones serve on and are reported again.
    next.close();
    text = await scrape(m);
    expect(metricValue(text, 'peregrine_ratelimit_keys', { policy: 'p' })).toBe(3);
    old.close();
    text = await scrape(m);
    expect(metricValue(text, 'peregrine_ratelimit_keys', { policy: 'p' })).toBeUndefined();
    expect(metricValue(text, 'peregrine_ratelimit_evictions_total', { policy: 'p' })).toBe(2);
  });
});
