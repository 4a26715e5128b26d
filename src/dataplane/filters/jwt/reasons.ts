/**
 * Deny decisions as GatewayErrors: a stable code, the metric `reason`, and the RFC 6750
 * `WWW-Authenticate` challenge. Descriptions are fixed strings chosen here: nothing from the token,
 * jose or the JWKS endpoint ever reaches a client.
 */
import { type ErrorCode, GatewayError } from '../../../errors.ts';
import type { AuthReason } from '../../../telemetry/metrics.ts';

export const REALM = 'peregrine';

/** Why a presented token was refused (each maps to 401 invalid_token). */
export type TokenFailure =
  | 'malformed'
  | 'expired'
  | 'not_yet_valid'
  | 'bad_signature'
  | 'unknown_kid'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'wrong_type'
  | 'missing_claim'
  | 'forbidden_header'
  | 'algorithm_not_allowed'
  | 'too_large';

/** What verification can answer instead of a verified token. */
export type VerifyFailure = TokenFailure | 'jwks_unavailable';

const DESCRIPTIONS: Readonly<Record<TokenFailure, string>> = {
  malformed: 'The access token is malformed',
  expired: 'The access token expired',
  not_yet_valid: 'The access token is not valid yet',
  bad_signature: 'The access token signature is invalid',
  unknown_kid: 'The access token is signed with an unknown key',
  wrong_issuer: 'The access token issuer is not accepted',
  wrong_audience: 'The access token audience is not accepted',
  wrong_type: 'The access token type is not accepted',
  missing_claim: 'The access token lacks a required claim',
  forbidden_header: 'The access token carries a header parameter that is not accepted',
  algorithm_not_allowed: 'The access token algorithm is not accepted',
  too_large: 'The access token is too large',
};

/** `WWW-Authenticate` for a request without a token (RFC 6750 §3.1: no error code). */
export const MISSING_TOKEN_CHALLENGE = `Bearer realm="${REALM}"`;

const INVALID_TOKEN_CHALLENGES = Object.fromEntries(
  Object.entries(DESCRIPTIONS).map(([reason, description]) => [
    reason,
    `Bearer realm="${REALM}", error="invalid_token", error_description="${description}"`,
  ]),
) as Readonly<Record<TokenFailure, string>>;

/**
 * A refusal by an auth filter. `reason` is the `reason` label of peregrine_auth_decisions_total
 * (and what the pipeline may put on the span); `headers` carries the challenge.
 */
export class AuthError extends GatewayError {
  readonly reason: AuthReason;
  /** Provider label the decision was counted under. */
  readonly provider: string;

  constructor(
    code: ErrorCode,
    reason: AuthReason,
    provider: string,
    description: string | undefined,
    headers: Readonly<Record<string, string>> | undefined,
  ) {
    super(code, description, headers === undefined ? undefined : { headers });
    this.name = 'AuthError';
    this.reason = reason;
    this.provider = provider;
  }
}

export function missingTokenError(provider: string): AuthError {
  return new AuthError('AUTH_REQUIRED', 'missing', provider, undefined, {
    'www-authenticate': MISSING_TOKEN_CHALLENGE,
  });
}

export function verifyFailureError(reason: VerifyFailure, provider: string): AuthError {
  // The keys are unreachable: the gateway's problem, not the token's. 503 keeps clients from
  // discarding good tokens and stampeding the identity provider.
  if (reason === 'jwks_unavailable') {
    return new AuthError('AUTH_UNAVAILABLE', reason, provider, 'Token verification keys are unavailable', {
      'retry-after': '5',
    });
  }
  return new AuthError('INVALID_TOKEN', reason, provider, DESCRIPTIONS[reason], {
    'www-authenticate': INVALID_TOKEN_CHALLENGES[reason],
  });
}

/** The 403 challenge for a route; `scopes` are the route's required scopes (RFC 6750 §3: `scope`). */
export function insufficientScopeChallenge(description: string, scopes: readonly string[]): string {
  const scope = scopes.length > 0 ? `, scope="${scopes.join(' ')}"` : '';
  return `Bearer realm="${REALM}", error="insufficient_scope", error_description="${description}"${scope}`;
}

export const INSUFFICIENT_SCOPE_DESCRIPTION = 'The access token lacks a required scope';
export const INSUFFICIENT_ROLE_DESCRIPTION = 'The access token lacks a required role';
