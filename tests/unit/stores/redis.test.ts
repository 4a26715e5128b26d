import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SecretLoadError } from '../../../src/config/secret-ref.ts';
import { reconnectDelay, redisErrorKind } from '../../../src/stores/redis.ts';
import { checkRedisTlsFiles, readRedisConnectOptions } from '../../../src/stores/redis-connect-options.ts';
import { explainRedisTlsError } from '../../../src/stores/redis-tls-errors.ts';
import { RedisSchema } from '../../../src/stores/schema.ts';
import { TestCa } from '../../helpers/certs.ts';

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
    expect(problems({ url: 'rediss://redis:6380', tls: {} })).toEqual([
      'tls.ca: tls needs ca, or cert and key (rediss:// alone verifies against the public CAs)',
    ]);
    // A client certificate: with its key, and with or without a CA of its own.
    const mtls = { url: 'rediss://redis:6380', tls: { cert: '/c.pem', key: '/k.pem' } };
    expect(problems(mtls)).toEqual([]);
    expect(problems({ ...mtls, tls: { ...mtls.tls, ca: '/ca.pem' } })).toEqual([]);
    expect(problems({ ...mtls, tls: { ca: '/ca.pem', cert: '/c.pem' } })).toEqual([
      'tls.key: cert and key come together (the client certificate and its private key)',
    ]);
    expect(problems({ ...mtls, tls: { key: '/k.pem' } })).toEqual([
      'tls.cert: cert and key come together (the client certificate and its private key)',
    ]);
    expect(problems({ ...mtls, url: 'redis://redis:6379' })).toEqual(['tls: tls needs a rediss:// url']);
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

describe('checkRedisTlsFiles', () => {
  const dir = mkdtempSync(join(tmpdir(), 'peregrine-redis-tls-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  };

  it('reads the CA and the client certificate and key as PEM text for every connection', async () => {
    const ca = await TestCa.create();
    const client = await ca.issue({ cn: 'gateway', eku: ['clientAuth'] });
    const files = {
      ca: file('ca.crt', ca.cert),
      cert: file('c.crt', client.cert),
      key: file('c.key', client.key),
    };
    expect(checkRedisTlsFiles(files)).toEqual({
      options: { ca: ca.cert, cert: client.cert, key: client.key },
      problems: [],
    });
    expect(checkRedisTlsFiles({ cert: files.cert, key: files.key }).options).toEqual({
      cert: client.cert,
      key: client.key,
    });
    const config = RedisSchema.parse({ url: 'rediss://redis:6380', tls: files });
    expect(readRedisConnectOptions(config, {}).tls).toEqual({
      ca: ca.cert,
      cert: client.cert,
      key: client.key,
    });
  });

  it('refuses an expired certificate and a key of another, reporting every problem', async () => {
    const ca = await TestCa.create();
    const expired = await ca.issue({
      cn: 'gateway',
      notBefore: new Date(Date.now() - 2 * 86_400_000),
      notAfter: new Date(Date.now() - 60_000),
    });
    const other = await ca.issue({ cn: 'other' });
    const cert = file('old.crt', expired.cert);
    const { options, problems } = checkRedisTlsFiles({ cert, key: file('other.key', other.key) });
    expect(options).toBeUndefined();
    expect(problems.map((p) => [p.setting, p.message])).toEqual([
      ['key', `key ${join(dir, 'other.key')} does not match certificate ${cert}`],
      ['cert', expect.stringMatching(new RegExp(`^certificate ${cert} expired at `))],
    ]);
    const config = RedisSchema.parse({
      url: 'rediss://redis:6380',
      tls: { cert, key: file('old.key', expired.key) },
    });
    expect(() => readRedisConnectOptions(config, {})).toThrow(/expired at/);
  });
});

describe('explainRedisTlsError', () => {
  const error = (message: string, code: string) => Object.assign(new Error(message), { code });
  const unknownCa = error(
    'error:0A000418:SSL routines:ssl3_read_bytes:tlsv1 alert unknown ca',
    'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA',
  );

  it('names the setting when Redis refuses the client certificate, or demands one', () => {
    expect(explainRedisTlsError(unknownCa, { afterHandshake: true, clientCertificate: true })).toMatch(
      /^Redis refused the client certificate of redis\.tls\.cert \(alert: unknown ca\)/,
    );
    const required = error('tlsv13 alert certificate required', 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED');
    expect(explainRedisTlsError(required, { afterHandshake: false, clientCertificate: false })).toBe(
      'Redis demands a client certificate (alert: certificate required): set redis.tls.cert and redis.tls.key',
    );
    expect(
      explainRedisTlsError(error('tlsv1 alert protocol version', 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION'), {
        afterHandshake: false,
        clientCertificate: false,
      }),
    ).toBe('Redis refused the TLS handshake (alert: protocol version)');
  });

  it('reads a reset between the handshake and ready as a missing client certificate, and nothing else', () => {
    const reset = error('write ECONNRESET', 'ECONNRESET');
    expect(explainRedisTlsError(reset, { afterHandshake: true, clientCertificate: false })).toMatch(
      /tls-auth-clients yes.*set redis\.tls\.cert and redis\.tls\.key$/,
    );
    expect(explainRedisTlsError(reset, { afterHandshake: false, clientCertificate: false })).toBeUndefined();
    expect(
      explainRedisTlsError(error('connect ECONNREFUSED', 'ECONNREFUSED'), {
        afterHandshake: true,
        clientCertificate: false,
      }),
    ).toBeUndefined();
    expect(
      explainRedisTlsError(new Error('WRONGPASS invalid username-password pair'), {
        afterHandshake: true,
        clientCertificate: true,
      }),
    ).toBeUndefined();
  });
});
