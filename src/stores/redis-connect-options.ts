/**
 * What Peregrine's Redis connections AUTH with and which CAs they trust: `redis.username`, the
 * password `redis.password` points at, and the PEM bundle of `redis.tls.ca`, read once at start
 * (every connection of one gateway shares them). A password that cannot be read stops the start
 * naming the setting, never the value; so does a CA file that is unreadable or holds no certificate.
 */
import { readTokenRef } from '../config/secret-ref.ts';
import { type CertificateLoadError, checkCaBundle, joinProblems } from '../tls/pem.ts';
import type { RedisConfig } from './schema.ts';

/** ioredis's options for them (`tls` merged over the `{}` that `rediss://` implies). */
export interface RedisConnectOptions {
  readonly username?: string;
  readonly password?: string;
  readonly tls?: { readonly ca: string };
}

/**
 * Throws SecretLoadError when the password is unset, unreadable, short or has whitespace, and
 * CertificateLoadError when the CA bundle cannot be used.
 */
export function readRedisConnectOptions(config: RedisConfig, env: NodeJS.ProcessEnv): RedisConnectOptions {
  const password =
    config.password === undefined ? undefined : readTokenRef(config.password, 'redis password', env);
  const ca = config.tls?.ca === undefined ? undefined : readRedisCa(config.tls.ca);
  return {
    ...(config.username === undefined ? {} : { username: config.username }),
    ...(password === undefined ? {} : { password }),
    ...(ca === undefined ? {} : { tls: { ca } }),
  };
}

/** The CA bundle's PEM, or the problems with it (for `peregrine validate` too). */
export function checkRedisCa(file: string): { pem?: string; problems: CertificateLoadError[] } {
  const problems: CertificateLoadError[] = [];
  const bundle = checkCaBundle(file, 'ca', problems);
  return { pem: bundle?.pem, problems };
}

function readRedisCa(file: string): string {
  const { pem, problems } = checkRedisCa(file);
  if (pem === undefined) throw joinProblems(problems);
  return pem;
}
