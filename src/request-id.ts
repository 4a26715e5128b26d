/**
 * The id every request is known by, in the data plane and on the registration API alike: the
 * client's `x-request-id` when it is tame, a new UUID otherwise.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** A client-supplied request id is kept only when it is this tame; otherwise a UUID replaces it. */
export const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/** The client's `x-request-id` when it is tame, a new UUID otherwise. */
export function requestIdOf(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID_RE.test(given) ? given : randomUUID();
}
