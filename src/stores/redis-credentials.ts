/**
 * What Peregrine's Redis connections AUTH with: `redis.username` and the password `redis.password`
 * points at, read once at start (every connection of one gateway shares them). A password that
 * cannot be read stops the start naming the setting, never the value.
 */
import { readTokenRef } from '../config/secret-ref.ts';
import type { RedisConfig } from './schema.ts';

export interface RedisCredentials {
  readonly username?: string;
  readonly password?: string;
}

/** Throws SecretLoadError when the password is unset, unreadable, short or has whitespace. */
export function readRedisCredentials(config: RedisConfig, env: NodeJS.ProcessEnv): RedisCredentials {
  if (config.password === undefined) return {};
  const password = readTokenRef(config.password, 'redis password', env);
  return config.username === undefined ? { password } : { username: config.username, password };
}
