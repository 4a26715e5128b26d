import { describe, expect, it } from 'vitest';
import { responseHeaderList } from '../../../src/dataplane/forward/headers.ts';

describe('responseHeaderList', () => {
  it('leaves out hop-by-hop headers and those the upstream Connection names, keeping the rest in order', () => {
    const list = responseHeaderList(
      {
        'content-type': 'text/plain',
        connection: 'keep-alive, X-Up-Hop',
        'keep-alive': 'timeout=5',
        'x-up-hop': 'secret',
        'transfer-encoding': 'chunked',
        'proxy-authenticate': 'Basic',
        trailer: 'x-t',
        upgrade: 'h2c',
        'set-cookie': ['a=1', 'b=2'],
        'x-kept': 'yes',
      },
      'rid-1',
      false,
    );
    expect(list).toEqual([
      'content-type',
      'text/plain',
      'set-cookie',
      ['a=1', 'b=2'],
      'x-kept',
      'yes',
      'x-request-id',
      'rid-1',
    ]);
  });

  it("replaces the upstream's X-Request-Id with the gateway's and adds connection: close when asked", () => {
    expect(
      responseHeaderList({ 'x-request-id': 'from-upstream', connection: 'close' }, 'rid-2', true),
    ).toEqual(['x-request-id', 'rid-2', 'connection', 'close']);
  });
});
