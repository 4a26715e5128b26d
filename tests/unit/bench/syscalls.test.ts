import { describe, expect, it } from 'vitest';
import { countCalls } from '../../../bench/syscalls.ts';

const TRACE = [
  '101 1700000000.100000 epoll_pwait(10, [], 1024, 0, NULL, 8) = 0',
  '101 1700000001.000000 read(23, "GET / HTTP/1.1\\r\\n"..., 65536) = 65',
  '101 1700000001.000100 write(24, "GET / HTTP/1.1\\r\\n"..., 275) = 275',
  '102 1700000001.000200 epoll_pwait(15,  <unfinished ...>',
  '101 1700000001.000300 writev(23, [{iov_base="HTTP/1.1 200 OK"..., iov_len=208}], 1) = 208',
  '102 1700000001.000400 <... epoll_pwait resumed>[], 1024, 10, NULL, 8) = 0',
  '101 1700000001.000500 --- SIGCHLD {si_signo=SIGCHLD} ---',
  '101 1700000003.000000 read(23, "", 65536) = 0',
].join('\n');

describe('countCalls', () => {
  it('counts each call once by name within the window, a resumed call not again', () => {
    const counts = countCalls(TRACE, 1700000001, 1700000002);
    expect(Object.fromEntries(counts)).toEqual({ read: 1, write: 1, writev: 1, epoll_pwait: 1 });
  });
});
