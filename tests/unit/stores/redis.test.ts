import { describe, expect, it } from 'vitest';
import { reconnectDelay, redisErrorKind } from '../../../src/stores/redis.ts';
import { RedisSchema } from '../../../src/stores/schema.ts';

describe('reconnectDelay', () => {
  it('doubles from the initial delay up to the maximum, with up to half taken off as jitter', () => {
    const top = () => 0.999999;
    expect([1, 2, 3, 4, 5, 10, 100].map((n) => reconnectDelay(n, 50, 1000, top))).toEqual([
      50, 100, 200, 400, 800, 1000, 1000,
    ]);
    expect(reconnectDelay(3, 50, 1000, () => 0)).toBe(100);
    expect(reconnectDelay(1, 1, 10, () => 0)).toBe(1);
  });
});

describe('redisErrorKind', () => {
  it('tells timeouts, lost connections and error replies apart', () => {
    expect(redisErrorKind(new Error('Command timed out'))).toBe('timeout');
    expect(redisErrorKind(new Error("Stream isn't writeable and enableOfflineQueue options is false"))).toBe(
      'connection',
    );
    expect(redisErrorKind(new Error('connect ECONNREFUSED 127.0.0.1:6379'))).toBe('connection');
    expect(redisErrorKind(new Error('Connection is closed.'))).toBe('connection');
    expect(
      redisErrorKind(new Error('WRONGTYPE Operation against a key holding the wrong kind of value')),
    ).toBe('command');
  });
});

describe('RedisSchema', () => {
  it('has defaults that never wait long on Redis', () => {
    expect(RedisSchema.parse({})).toEqual({
      url: 'redis://127.0.0.1:6379',
      keyPrefix: 'peregrine:',
      connectTimeout: 2000,
      commandTimeout: 500,
      reconnect: { initialDelay: 50, maxDelay: 5000 },
      connectionName: 'peregrine',
    });
  });

  it('refuses other URL schemes, odd prefixes and an inverted backoff', () => {
    expect(RedisSchema.safeParse({ url: 'http://x' }).success).toBe(false);
    expect(RedisSchema.safeParse({ keyPrefix: 'a b' }).success).toBe(false);
    const r = RedisSchema.safeParse({ reconnect: { initialDelay: '2s', maxDelay: '1s' } });
    expect(r.success).toBe(false);
  });
});
