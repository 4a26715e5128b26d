/**
 * Verifying a peer's X.509-SVID (spiffe.io, X509-SVID standard §5): after OpenSSL has verified the
 * chain against the trust domain's CA bundle, the leaf must be a leaf (basicConstraints cA false,
 * no keyCertSign or cRLSign), carry exactly one URI SAN, and that URI must be a SPIFFE ID with a
 * path. Then it is authorised: it must be one the caller expects. Host name verification is not
 * part of it: the SPIFFE ID is what is checked, never a DNS SAN or the subject's CN.
 */
import type { PeerCertificate } from 'node:tls';
import { type ExpectedIdentity, isWorkloadId } from './spiffe.ts';
import { readCertificateFacts } from './x509-der.ts';

/** Why a peer's certificate is not an acceptable SVID: not an SVID at all, or not the one expected. */
export type PeerIdentityReason = 'not_svid' | 'identity_mismatch';

/** Node's error code for the failure, as it reaches undici and the classification of the attempt. */
export const PEER_IDENTITY_ERROR = 'ERR_PEREGRINE_PEER_IDENTITY';

export class PeerIdentityError extends Error {
  readonly code = PEER_IDENTITY_ERROR;
  readonly reason: PeerIdentityReason;
  /** The URI SANs the certificate carries (none: an empty list). */
  readonly seen: readonly string[];
  readonly expected: readonly string[];

  constructor(
    reason: PeerIdentityReason,
    problem: string,
    seen: readonly string[],
    expected: readonly string[],
  ) {
    super(problem);
    this.name = 'PeerIdentityError';
    this.reason = reason;
    this.seen = seen;
    this.expected = expected;
  }
}

/**
 * The SPIFFE ID of a leaf certificate (DER) under the X509-SVID rules, or the error saying why it
 * has none or is not expected.
 */
export function verifySvid(der: Uint8Array, expected: ExpectedIdentity): string | PeerIdentityError {
  const want = expected.expected;
  let facts: ReturnType<typeof readCertificateFacts>;
  try {
    facts = readCertificateFacts(der);
  } catch (err) {
    return new PeerIdentityError('not_svid', (err as Error).message, [], want);
  }
  const uris = facts.sans.uris;
  if (uris.length !== 1) {
    const problem =
      uris.length === 0 ? 'no URI SAN (no SPIFFE ID)' : `${uris.length} URI SANs (an SVID has one)`;
    return new PeerIdentityError('not_svid', problem, uris, want);
  }
  const id = uris[0]!;
  if (!isWorkloadId(id))
    return new PeerIdentityError('not_svid', 'the URI SAN is not a SPIFFE ID with a path', uris, want);
  if (facts.ca) return new PeerIdentityError('not_svid', 'a CA certificate is not a leaf SVID', uris, want);
  if (facts.keyUsage?.keyCertSign || facts.keyUsage?.crlSign)
    return new PeerIdentityError('not_svid', 'a leaf SVID may not sign certificates or CRLs', uris, want);
  if (!expected.matches(id))
    return new PeerIdentityError('identity_mismatch', 'unexpected SPIFFE ID', uris, want);
  return id;
}

/**
 * A `checkServerIdentity` for `tls.connect` that verifies the server's SVID instead of its host
 * name. Node calls it once the chain has verified, and not on a resumed session, whose certificate
 * was verified (against the same expectations) when the session was made.
 */
export function svidServerCheck(
  expected: ExpectedIdentity,
): (host: string, cert: PeerCertificate) => Error | undefined {
  return function checkServerSvid(_host: string, cert: PeerCertificate): Error | undefined {
    if (!cert?.raw) return new PeerIdentityError('not_svid', 'no peer certificate', [], expected.expected);
    const result = verifySvid(cert.raw, expected);
    return typeof result === 'string' ? undefined : result;
  };
}
