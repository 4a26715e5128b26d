import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { asGatewayError, ERROR_CODES, type ErrorCode, GatewayError, toProblem } from '../../src/errors.ts';

describe('error codes', () => {
  it('documents every code with its status in docs/architecture.md', () => {
    const doc = readFileSync('docs/architecture.md', 'utf8');
    for (const [code, spec] of Object.entries(ERROR_CODES)) {
      expect(doc, code).toMatch(new RegExp(`\\| ${code} \\| ${spec.status} \\|`));
    }
  });

  it('maps a GatewayError to an RFC 9457 problem with ids and a stable type', () => {
    const err = new GatewayError('UPSTREAM_TIMEOUT', 'total request timeout exceeded');
    const p = toProblem(err, { traceId: 'a'.repeat(32), requestId: 'r-1' });
    expect(p).toEqual({
      type: 'https://peregrine.dev/problems/upstream-timeout',
      title: ERROR_CODES.UPSTREAM_TIMEOUT.title,
      status: 504,
      code: 'UPSTREAM_TIMEOUT',
      detail: 'total request timeout exceeded',
      traceId: 'a'.repeat(32),
      requestId: 'r-1',
    });
  });

  it('omits detail when it only repeats the title, and wraps unknown throws as INTERNAL', () => {
    const code: ErrorCode = 'ROUTE_NOT_FOUND';
    expect(toProblem(new GatewayError(code), {}).detail).toBeUndefined();
    const wrapped = asGatewayError(new TypeError('boom'));
    expect(wrapped.code).toBe('INTERNAL');
    expect(wrapped.status).toBe(500);
    expect((wrapped.cause as Error).message).toBe('boom');
    // The problem body never carries the cause's text.
    expect(JSON.stringify(toProblem(wrapped, {}))).not.toContain('boom');
  });
});
