import { describe, expect, it } from 'vitest';
import { establishedOn } from '../../../bench/lib/sockets.ts';

const TABLE = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2694 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0
   1: 0100007F:2694 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 20 4 30 10 -1
   2: 0100007F:2694 0100007F:C351 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 20 4 30 10 -1
   3: 0100007F:2694 0100007F:C352 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0
   4: 0100007F:C350 0100007F:2694 01 00000000:00000000 00:00000000 00000000  1000        0 4 1 0 20 4 30 10 -1
   5: 0100007F:12694 0100007F:C353 01 00000000:00000000 00:00000000 00000000  1000        0 5 1 0 20 4 30 10 -1
`;

describe('connections on a port from /proc/net/tcp', () => {
  it('counts established connections whose local port it is: not listeners, not TIME_WAIT, not the client side', () => {
    expect(establishedOn(TABLE, 0x2694)).toBe(2);
    expect(establishedOn(TABLE, 0xc350)).toBe(1);
    expect(establishedOn(TABLE, 1)).toBe(0);
  });
});
