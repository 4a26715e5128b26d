/**
 * Who may use the admin API once it leaves loopback: a client with a verified certificate (the
 * admin listener's `tls.clientAuth`), or a request with the configured bearer token. The token is
 * read once at start and kept only as its SHA-256 digest; a request's token is hashed and
 * compared in constant time, and neither is ever logged. With neither configured, the guard is
 * absent and the address (loopback by default) is the only protection.
 *
 * Open without a credential: the probes (`/healthz`, `/readyz`, unless `openProbes` is off) and
 * the status page's own files (`/`, `/ui`, its script and style: the same bytes in every
 * build, no data), so a browser can load the page and be asked for the token; everything the page
 * shows comes from the API, which is guarded.
 */
import { timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { bearerToken, readTokenRef, tokenDigest } from '../config/secret-ref.ts';
import { plainAddress } from '../dataplane/forward/trusted-proxies.ts';
import type { Telemetry } from '../telemetry/telemetry.ts';
import { peerIdentityOf } from '../tls/peer-identity.ts';
import type { ClientAuthMode } from '../tls/schema.ts';
import type { AdminAuthConfig } from './schema.ts';

export const ADMIN_REALM = 'peregrine-admin';
const PROBES: ReadonlySet<string> = new Set(['/healthz', '/readyz']);

export type AdminAuthFailure = 'no_credential' | 'bad_credential';

/** What protects the admin API, as `/v1/status` shows it. */
export interface AdminAuthMode {
  /** A bearer token is accepted (named so: the redaction hides every key with "token" in it). */
  readonly bearer: boolean;
  readonly clientCertificates: ClientAuthMode;
  readonly openProbes: boolean;
}

export function adminAuthMode(auth: AdminAuthConfig, clientAuth: ClientAuthMode | undefined): AdminAuthMode {
  return {
    bearer: auth.token !== undefined,
    clientCertificates: clientAuth ?? 'none',
    openProbes: auth.openProbes,
  };
}

/** Paths served to anyone: the page's static files. */
export function isPublicPath(path: string): boolean {
  return path === '/' || path === '/ui' || path.startsWith('/ui/');
}

/**
 * The express middleware that refuses requests without a credential, or undefined when nothing is
 * configured. Reads the token now: throws SecretLoadError when it cannot be used.
 */
export function createAdminGuard(
  auth: AdminAuthConfig,
  clientAuth: ClientAuthMode | undefined,
  telemetry: Telemetry,
  env: NodeJS.ProcessEnv = process.env,
): ((req: Request, res: Response, next: NextFunction) => void) | undefined {
  const certificates = clientAuth !== undefined && clientAuth !== 'none';
  const expected =
    auth.token === undefined ? undefined : tokenDigest(readTokenRef(auth.token, 'admin token', env));
  if (expected === undefined && !certificates) return undefined;
  const openProbes = auth.openProbes;
  const { metrics, logger } = telemetry;

  return function adminGuard(req: Request, res: Response, next: NextFunction): void {
    const header = req.headers.authorization;
    const token = bearerToken(header);
    if (
      isPublicPath(req.path) ||
      (openProbes && PROBES.has(req.path)) ||
      // Set only for a chain that verified (side-listener.ts); `required` admits no other client.
      (certificates && peerIdentityOf(req.socket) !== undefined) ||
      (expected !== undefined && token !== undefined && timingSafeEqual(tokenDigest(token), expected))
    ) {
      next();
      return;
    }
    const reason: AdminAuthFailure = header === undefined ? 'no_credential' : 'bad_credential';
    metrics.recordAdminAuthFailure(reason);
    logger.debug(
      { reason, path: req.path, clientAddress: plainAddress(req.socket.remoteAddress) },
      'admin request refused',
    );
    const detail =
      expected === undefined
        ? 'a verified client certificate is required'
        : certificates
          ? 'a verified client certificate or the admin bearer token is required'
          : reason === 'no_credential'
            ? 'the admin bearer token is required'
            : 'the bearer token is not the admin token';
    if (expected === undefined) {
      res.status(403).type('application/problem+json').json({ title: 'Forbidden', status: 403, detail });
      return;
    }
    res
      .status(401)
      .set(
        'www-authenticate',
        reason === 'no_credential'
          ? `Bearer realm="${ADMIN_REALM}"`
          : `Bearer realm="${ADMIN_REALM}", error="invalid_token"`,
      )
      .type('application/problem+json')
      .json({ title: 'Unauthorized', status: 401, detail });
  };
}
