/**
 * What a rate limit's Redis call leaves for old space, without the gateway around it: run with
 * `--trace-gc-nvp` and sum `promoted=` over a fixed number of calls at a fixed rate.
 *
 *   node --trace-gc-nvp bench/micro/redis-promotion.ts <redis url> <get|flexible|counters> [rate] [calls]
 */
import type { Redis } from 'ioredis';
import pino from 'pino';
import { RateLimiterRedis } from 'rate-limiter-flexible';
import { RedisCounters } from '../../src/dataplane/filters/rate-limit/counters.ts';
import { DEFAULT_MAX_KEYS, RateLimitSchema } from '../../src/dataplane/filters/rate-limit/schema.ts';
import { RedisConnection } from '../../src/stores/redis.ts';
import { RedisSchema } from '../../src/stores/schema.ts';
import { createMetrics } from '../../src/telemetry/metrics.ts';

const [url, mode = 'counters', rateArg = '300', callsArg = '6000'] = process.argv.slice(2);
const rate = Number(rateArg);
const calls = Number(callsArg);

async function main(): Promise<void> {
  const metrics = createMetrics({ exemplars: false, version: 'bench' });
  const conn = new RedisConnection(RedisSchema.parse({ url, keyPrefix: 'p:' }), {
    logger: pino({ level: 'silent' }),
    metrics: metrics.redis,
  }).rateLimits();
  const client: Redis = conn.client;
  while (!conn.ready) await new Promise((r) => setTimeout(r, 10));
  const flexible = new RateLimiterRedis({ storeClient: client, points: 1e9, duration: 1, keyPrefix: 'x' });
  const counters = new RedisCounters({
    policy: 'p',
    limits: RateLimitSchema.parse({ limits: [{ points: 1e9, duration: '1s' }] }).limits,
    redis: conn,
    timeoutMs: 50,
    onError: 'insurance',
    replicas: 1,
    keyBound: { maxKeys: DEFAULT_MAX_KEYS, evicted: { value: 0 } },
    observer: { storeCall() {}, storeFailed() {} },
  });
  const call = (): Promise<unknown> =>
    mode === 'get'
      ? client.get('k')
      : mode === 'flexible'
        ? flexible.consume('127.0.0.1', 1)
        : counters.consume('127.0.0.1', 1, (c) => c);
  for (const phase of ['warmup', 'measured']) {
    console.log(`=== ${phase}`);
    const t0 = performance.now();
    let sent = 0;
    await new Promise<void>((done) => {
      const timer = setInterval(() => {
        const due = Math.min(calls, Math.floor(((performance.now() - t0) * rate) / 1000));
        while (sent < due) {
          sent++;
          void call();
        }
        if (sent >= calls) {
          clearInterval(timer);
          done();
        }
      }, 1);
    });
  }
  await new Promise((r) => setTimeout(r, 100));
  console.log('=== end');
  await conn.close();
  // Metrics' timers would keep the process alive.
  process.exit(0);
}

void main();
