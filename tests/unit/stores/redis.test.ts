import { describe, expect, it } from 'vitest';
import { SecretLoadError } from '../../../src/config/secret-ref.ts';
import { reconnectDelay, redisErrorKind } from '../../../src/stores/redis.ts';
import { readRedisConnectOptions } from '../../../src/stores/redis-connect-options.ts';
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

  it('takes a password by reference and an ACL user, in one place only', () => {
    const ok = RedisSchema.parse({ username: 'peregrine', password: { file: '/run/secrets/redis' } });
    expect(ok).toMatchObject({ username: 'peregrine', password: { file: '/run/secrets/redis' } });
    const problems = (input: unknown) =>
      RedisSchema.safeParse(input).error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`) ?? [];
    expect(problems({ password: { env: 'A', file: '/b' } })).toEqual([
      'password.env: exactly one of env or file is required',
    ]);
    expect(problems({ password: {} })).toEqual(['password.env: exactly one of env or file is required']);
    expect(problems({ password: 'hunter2hunter2hunter2' })).toHaveLength(1);
    expect(problems({ username: 'peregrine' })).toEqual(['password: username needs a password']);
    expect(problems({ username: 'a b', password: { env: 'P' } })).toHaveLength(1);
    expect(problems({ url: 'redis://:x@redis:6379', password: { env: 'P' } })).toEqual([
      'url: credentials in the url and in password/username: give them in one place (password)',
    ]);
    expect(problems({ url: 'redis://u@redis:6379', password: { env: 'P' } })).toHaveLength(1);
    expect(problems({ tls: { ca: '/ca.pem' } })).toEqual(['tls: tls needs a rediss:// url']);
    expect(problems({ url: 'rediss://redis:6380', tls: { ca: '/ca.pem' } })).toEqual([]);
    expect(problems({ url: 'rediss://redis:6380', tls: {} })).toHaveLength(1);
    // Credentials in the URL alone stay accepted (interpolated, e.g. redis://:${P}@redis).
    expect(problems({ url: 'redis://:x@redis:6379' })).toEqual([]);
  });
});

describe('readRedisConnectOptions', () => {
  const secret = '0123456789abcdef0123';
  it('reads the password once, with the user when there is one', () => {
    expect(readRedisConnectOptions(RedisSchema.parse({}), {})).toEqual({});
    expect(
      readRedisConnectOptions(RedisSchema.parse({ password: { env: 'P' } }), { P: ` ${secret}\n` }),
    ).toEqual({
      password: secret,
    });
    expect(
      readRedisConnectOptions(RedisSchema.parse({ username: 'gw', password: { env: 'P' } }), { P: secret }),
    ).toEqual({ username: 'gw', password: secret });
  });

  it('refuses an unset, short or unreadable password, naming the setting and never the value', () => {
    const config = RedisSchema.parse({ password: { env: 'P' } });
    expect(() => readRedisConnectOptions(config, {})).toThrow(
      new SecretLoadError('redis password: environment variable P is not set'),
    );
    const short = (() => {
      try {
        readRedisConnectOptions(config, { P: 'short-secret' });
      } catch (err) {
        return err as Error;
      }
    })();
    expect(short).toBeInstanceOf(SecretLoadError);
    expect(short!.message).toMatch(/^redis password: shorter than 16/);
    expect(short!.message).not.toContain('short-secret');
    expect(() =>
      readRedisConnectOptions(RedisSchema.parse({ password: { file: '/nonexistent/p' } }), {}),
    ).toThrow(/^redis password: cannot read \/nonexistent\/p \(ENOENT\)$/);
  });
});
