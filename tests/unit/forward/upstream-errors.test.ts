import { describe, expect, it } from 'vitest';
import { classifyUpstreamError, isClientSide } from '../../../src/dataplane/forward/upstream-errors.ts';
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
    ['HPE_INVALID_CONSTANT', 'UPSTREAM_PROTOCOL_ERROR', 'protocol_error'],
    ['SOMETHING_NEW', 'UPSTREAM_RESET', 'other'],
  ])('%s → %s, outcome %s', (code, gatewayCode, outcome) => {
    const err = coded(code);
    const c = classifyUpstreamError(err);
    expect([c.error.code, c.outcome]).toEqual([gatewayCode, outcome]);
    expect(c.error.cause).toBe(err);
    // Never the upstream's text in what the client may see.
    expect(c.error.message).not.toContain('never reads');
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

  it('client-side outcomes are exactly the client_* ones', () => {
    expect(ATTEMPT_OUTCOMES.filter(isClientSide)).toEqual(['client_abort', 'client_timeout', 'client_error']);
  });
});
