/**
 * What Peregrine's Redis connections AUTH with and what their TLS uses: `redis.username`, the
 * password `redis.password` points at, the PEM bundle of `redis.tls.ca` and the client certificate
 * and key of `redis.tls.cert`/`redis.tls.key`, read once at start (every connection of one gateway
 * shares them; docs/decisions.md, "Redis client certificates: read once"). A password that cannot
 * be read stops the start naming the setting, never the value; so does a TLS file that is
 * unreadable, holds no certificate, a key that does not match, or an expired certificate.
 */
import { readTokenRef } from '../config/secret-ref.ts';
import { type CertificateLoadError, checkCaBundle, checkPair, joinProblems } from '../tls/pem.ts';
import type { RedisConfig } from './schema.ts';

/** The TLS options of every Redis connection: Node's `tls.connect` options, as ioredis passes them. */
export interface RedisTlsOptions {
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
}

/** ioredis's options for them (`tls` merged over the `{}` that `rediss://` implies). */
export interface RedisConnectOptions {
  readonly username?: string;
  readonly password?: string;
  readonly tls?: RedisTlsOptions;
}

/**
 * Throws SecretLoadError when the password is unset, unreadable, short or has whitespace, and
 * CertificateLoadError when a TLS file cannot be used.
 */
export function readRedisConnectOptions(config: RedisConfig, env: NodeJS.ProcessEnv): RedisConnectOptions {
  const password =
    config.password === undefined ? undefined : readTokenRef(config.password, 'redis password', env);
  const tls = config.tls === undefined ? undefined : readRedisTls(config.tls);
  return {
    ...(config.username === undefined ? {} : { username: config.username }),
    ...(password === undefined ? {} : { password }),
    ...(tls === undefined ? {} : { tls }),
  };
}

/**
 * The PEM texts of `redis.tls`, or every problem with its files (for `peregrine validate` too): the
 * CA bundle parses; the certificate parses, its key matches it and it has not expired.
 */
export function checkRedisTlsFiles(
  tls: NonNullable<RedisConfig['tls']>,
  now = Date.now(),
): { options?: RedisTlsOptions; problems: CertificateLoadError[] } {
  const problems: CertificateLoadError[] = [];
  const ca = tls.ca === undefined ? undefined : checkCaBundle(tls.ca, 'ca', problems);
  const pair =
    tls.cert === undefined || tls.key === undefined
      ? undefined
      : checkPair(tls.cert, tls.key, { cert: 'cert', key: 'key' }, now, problems);
  if (problems.length > 0) return { problems };
  return {
    options: {
      ...(ca === undefined ? {} : { ca: ca.pem }),
      ...(pair === undefined ? {} : { cert: pair.certPem, key: pair.keyPem }),
    },
    problems,
  };
}

function readRedisTls(tls: NonNullable<RedisConfig['tls']>): RedisTlsOptions {
  const { options, problems } = checkRedisTlsFiles(tls);
  if (options === undefined) throw joinProblems(problems);
  return options;
}
