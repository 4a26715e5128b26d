import { describe, expect, it } from 'vitest';
import {
  classifyUpstreamError,
  isClientSide,
  isStaleConnectionFailure,
  upstreamTlsFailure,
} from '../../../src/dataplane/forward/upstream-errors.ts';
import { GatewayError } from '../../../src/errors.ts';
import { ATTEMPT_OUTCOMES } from '../../../src/telemetry/metrics.ts';

function coded(code: string, name = 'Error'): Error {
  return Object.assign(new Error('text the classification never reads'), { code, name });
}

describe('classifyUpstreamError', () => {
  it.each([
    ['ECONNREFUSED', 'UPSTREAM_CONNECT_FAILED', 'connect_error'],
    ['ENOTFOUND', 'UPSTREAM_UNAVAILABLE', 'connect_error'],
    ['UND_ERR_CONNECT_TIMEOUT', 'UPSTREAM_CONNECT_TIMEOUT', 'timeout'],
    ['ECONNRESET', 'UPSTREAM_RESET', 'reset'],
    // undici closing the connection with the request unanswered (an HTTP/2 GOAWAY without error).
    ['UND_ERR_INFO', 'UPSTREAM_RESET', 'reset'],
    ['HPE_INVALID_CONSTANT', 'UPSTREAM_PROTOCOL_ERROR', 'protocol_error'],
    ['CERT_HAS_EXPIRED', 'UPSTREAM_TLS_VERIFY_FAILED', 'tls_error'],
    ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UPSTREAM_TLS_VERIFY_FAILED', 'tls_error'],
    ['DEPTH_ZERO_SELF_SIGNED_CERT', 'UPSTREAM_TLS_VERIFY_FAILED', 'tls_error'],
    ['ERR_TLS_CERT_ALTNAME_INVALID', 'UPSTREAM_TLS_VERIFY_FAILED', 'tls_error'],
    ['CERT_REVOKED', 'UPSTREAM_TLS_VERIFY_FAILED', 'tls_error'],
    ['ERR_SSL_WRONG_VERSION_NUMBER', 'UPSTREAM_TLS_HANDSHAKE_FAILED', 'tls_error'],
    ['ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', 'UPSTREAM_TLS_HANDSHAKE_FAILED', 'tls_error'],
    ['SOMETHING_NEW', 'UPSTREAM_RESET', 'other'],
  ])('%s → %s, outcome %s', (code, gatewayCode, outcome) => {
    const err = coded(code);
    const c = classifyUpstreamError(err);
    expect([c.error.code, c.outcome]).toEqual([gatewayCode, outcome]);
    expect(c.error.cause).toBe(err);
    // Never the upstream's or OpenSSL's text in what the client may see.
    expect(c.error.message).not.toContain('never reads');
  });

  it('a reset, a closed socket or a GOAWAY before any response, on a reused connection, is a stale one', () => {
    for (const code of ['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_INFO'])
      expect(isStaleConnectionFailure(coded(code), true, 0), code).toBe(true);
    expect(isStaleConnectionFailure(coded('UND_ERR_INFO'), false, 0)).toBe(false);
    expect(isStaleConnectionFailure(coded('UND_ERR_INFO'), true, 200)).toBe(false);
    expect(isStaleConnectionFailure(coded('HPE_INVALID_CONSTANT'), true, 0)).toBe(false);
  });

  it.each([
    ['CLIENT_CLOSED', 'client_abort'],
    ['PAYLOAD_TOO_LARGE', 'client_error'],
    ['BAD_REQUEST', 'client_error'],
    ['UPSTREAM_TIMEOUT', 'timeout'],
    ['UPSTREAM_BODY_TIMEOUT', 'timeout'],
    ['UPSTREAM_RESET', 'reset'],
  ] as const)('the gateway’s own %s → outcome %s', (code, outcome) => {
    const err = new GatewayError(code);
    expect(classifyUpstreamError(err)).toEqual({ error: err, outcome });
  });

  it('names the TLS reason: expired, unknown CA, name mismatch, not TLS', () => {
    expect(upstreamTlsFailure('CERT_HAS_EXPIRED')).toEqual({
      kind: 'verify',
      code: 'CERT_HAS_EXPIRED',
      reason: 'cert_expired',
    });
    expect(upstreamTlsFailure('UNABLE_TO_GET_ISSUER_CERT_LOCALLY')?.reason).toBe('unknown_ca');
    expect(upstreamTlsFailure('SELF_SIGNED_CERT_IN_CHAIN')?.reason).toBe('unknown_ca');
    expect(upstreamTlsFailure('ERR_TLS_CERT_ALTNAME_INVALID')?.reason).toBe('name_mismatch');
    expect(upstreamTlsFailure('CERT_SIGNATURE_FAILURE')?.reason).toBe('cert_invalid');
    expect(upstreamTlsFailure('ERR_SSL_WRONG_VERSION_NUMBER')).toEqual({
      kind: 'handshake',
      code: 'ERR_SSL_WRONG_VERSION_NUMBER',
      reason: 'not_tls',
    });
    expect(upstreamTlsFailure('ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION')?.reason).toBe('protocol_version');
    expect(upstreamTlsFailure('ECONNRESET')).toBeUndefined();
  });

  it('client-side outcomes are exactly the client_* ones', () => {
    expect(ATTEMPT_OUTCOMES.filter(isClientSide)).toEqual(['client_abort', 'client_timeout', 'client_error']);
  });
});
