import { describe, expect, it } from 'vitest';
import { buildUpstreamHeaders, type OutboundRequestInfo } from '../../../src/dataplane/forward/headers.ts';

const INFO: OutboundRequestInfo = {
  trusted: false,
  peerAddress: '10.0.0.9',
  proto: 'http',
  upstreamHost: undefined,
  requestId: 'rid-1',
  underscores: 'drop',
};

function names(list: readonly string[]): string[] {
  return list.filter((_, i) => i % 2 === 0);
}

describe('buildUpstreamHeaders: Connection', () => {
  for (const value of ['keep-alive', 'Keep-Alive', 'KEEP-ALIVE']) {
    it(`Connection: ${value} is not forwarded, nor Keep-Alive; every other header is`, () => {
      const out = buildUpstreamHeaders(
        ['Host', 'a.test', 'Connection', value, 'Keep-Alive', 'timeout=5', 'X-App', '1', 'Accept', '*/*'],
        INFO,
      );
      expect(out).toEqual([
        'X-App',
        '1',
        'Accept',
        '*/*',
        'host',
        'a.test',
        'x-forwarded-for',
        '10.0.0.9',
        'x-forwarded-proto',
        'http',
        'x-forwarded-host',
        'a.test',
        'x-request-id',
        'rid-1',
      ]);
    });
  }

  it('removes the headers Connection names, before and after it, in any case', () => {
    const out = buildUpstreamHeaders(
      [
        'X-Before',
        'a',
        'Connection',
        'keep-alive, X-Before,x-after',
        'X-After',
        'b',
        'X-Kept',
        'c',
        'Host',
        'h',
      ],
      INFO,
    );
    expect(names(out)).toEqual([
      'X-Kept',
      'host',
      'x-forwarded-for',
      'x-forwarded-proto',
      'x-forwarded-host',
      'x-request-id',
    ]);
  });

  it('takes the names of every Connection header, keep-alive alone among them', () => {
    const out = buildUpstreamHeaders(
      ['Connection', 'keep-alive', 'X-One', '1', 'Connection', 'x-one', 'X-Two', '2', 'Host', 'h'],
      INFO,
    );
    expect(names(out)).toEqual([
      'X-Two',
      'host',
      'x-forwarded-for',
      'x-forwarded-proto',
      'x-forwarded-host',
      'x-request-id',
    ]);
    const reversed = buildUpstreamHeaders(
      ['Connection', 'x-one', 'X-One', '1', 'Connection', 'keep-alive', 'X-Two', '2', 'Host', 'h'],
      INFO,
    );
    expect(names(reversed)).toEqual(names(out));
  });

  it('keeps TE: trailers even when Connection names TE', () => {
    const out = buildUpstreamHeaders(['Connection', 'TE', 'TE', 'trailers', 'Host', 'h'], INFO);
    expect(out.slice(0, 2)).toEqual(['TE', 'trailers']);
  });
});
