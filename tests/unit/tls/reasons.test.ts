import type { TLSSocket } from 'node:tls';
import { describe, expect, it } from 'vitest';
import {
  HANDSHAKE_FAILURE_REASONS,
  handshakeFailureReason,
  isClientCertReason,
  verifyErrorReason,
} from '../../../src/tls/reasons.ts';

function err(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(code), { code });
}

describe('TLS failure reasons', () => {
  it('maps OpenSSL verification errors', () => {
    expect(verifyErrorReason('CERT_HAS_EXPIRED')).toBe('cert_expired');
    expect(verifyErrorReason('CERT_NOT_YET_VALID')).toBe('cert_not_yet_valid');
    expect(verifyErrorReason('UNABLE_TO_VERIFY_LEAF_SIGNATURE')).toBe('unknown_ca');
    expect(verifyErrorReason('SELF_SIGNED_CERT_IN_CHAIN')).toBe('unknown_ca');
    expect(verifyErrorReason('INVALID_PURPOSE')).toBe('bad_purpose');
    expect(verifyErrorReason('SOMETHING_NEW')).toBe('cert_invalid');
    expect(verifyErrorReason(undefined)).toBe('cert_invalid');
  });

  it('prefers the verification error on the socket over the ECONNRESET Node reports', () => {
    const socket = { authorizationError: 'CERT_HAS_EXPIRED' } as unknown as TLSSocket;
    expect(handshakeFailureReason(err('ECONNRESET'), socket)).toBe('cert_expired');
    expect(handshakeFailureReason(err('ECONNRESET'), {} as TLSSocket)).toBe('client_closed');
  });

  it('maps handshake errors into a closed set', () => {
    expect(handshakeFailureReason(err('ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE'), undefined)).toBe(
      'no_cert',
    );
    expect(handshakeFailureReason(err('ERR_SSL_UNSUPPORTED_PROTOCOL'), undefined)).toBe('protocol_version');
    expect(handshakeFailureReason(err('ERR_SSL_HTTP_REQUEST'), undefined)).toBe('not_tls');
    expect(handshakeFailureReason(err('ERR_TLS_HANDSHAKE_TIMEOUT'), undefined)).toBe('timeout');
    expect(handshakeFailureReason(err('ERR_SSL_NO_APPLICATION_PROTOCOL'), undefined)).toBe('no_alpn');
    expect(handshakeFailureReason(err('ERR_SOMETHING_ELSE'), undefined)).toBe('other');
    for (const code of ['ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', 'ERR_SSL_WRONG_VERSION_NUMBER', 'X']) {
      expect(HANDSHAKE_FAILURE_REASONS).toContain(handshakeFailureReason(err(code), undefined));
    }
    expect(isClientCertReason('no_cert')).toBe(true);
    expect(isClientCertReason('protocol_version')).toBe(false);
  });
});
