/**
 * The id every request is known by, in the data plane and on the registration API alike: the
 * client's `x-request-id` when it is tame, a new UUID otherwise.
 */
import { randomFillSync } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** A client-supplied request id is kept only when it is this tame; otherwise a UUID replaces it. */
export const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

const POOL_BYTES = 16 * 256;
const pool = Buffer.allocUnsafe(POOL_BYTES);
let offset = POOL_BYTES;
/** The 36 characters of a UUID are written here and read off as one string. */
const text = Buffer.alloc(36, 0x2d /* - */);
const HEX = Buffer.from('0123456789abcdef', 'latin1');
/** Where each of the 16 bytes' two hex digits go in `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`. */
const AT = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/**
 * A random (version 4) UUID, RFC 9562 §5.4, from a pool the CSPRNG fills 256 ids at a time, as
 * `crypto.randomUUID` does. Built in a buffer and read as one flat string: randomUUID joins 20
 * pieces with `+`, about 500 bytes of rope per id for the GC (bench/allocations.ts).
 */
export function randomRequestId(): string {
  if (offset === POOL_BYTES) {
    randomFillSync(pool);
    offset = 0;
  }
  const at = offset;
  offset += 16;
  pool[at + 6] = (pool[at + 6]! & 0x0f) | 0x40;
  pool[at + 8] = (pool[at + 8]! & 0x3f) | 0x80;
  for (let i = 0; i < 16; i++) {
    const b = pool[at + i]!;
    const to = AT[i]!;
    text[to] = HEX[b >> 4]!;
    text[to + 1] = HEX[b & 0x0f]!;
  }
  return text.toString('latin1', 0, 36);
}

/** The client's `x-request-id` when it is tame, a new UUID otherwise. */
export function requestIdOf(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID_RE.test(given) ? given : randomRequestId();
}
