/**
 * A CommonJS package loaded on first use instead of at import: a library only some configurations
 * need (ioredis, rate-limiter-flexible) then costs nothing, in start-up time or in live heap that
 * every major GC marks, to a gateway that does not use it (bench/allocations.ts).
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** A function returning the package `id`, which it loads on its first call. */
export function lazyRequire<T>(id: string): () => T {
  let loaded: T | undefined;
  return () => {
    loaded ??= require(id) as T;
    return loaded;
  };
}
