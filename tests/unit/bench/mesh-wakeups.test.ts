import { describe, expect, it } from 'vitest';
import { parsePerfStat, parseStraceLines } from '../../../bench/mesh-wakeups.ts';

// strace -f -s 0 -o file: the thread id first; a call another thread interrupted is split.
const TRACE = [
  '101 epoll_pwait(10, [{events=EPOLLIN, data={u32=20, u64=20}}, {events=EPOLLIN, data={u32=21, u64=21}}], 1024, 0, NULL, 8) = 2',
  '101 read(20, ""..., 65536) = 199',
  '101 read(21, ""..., 65536) = 331',
  '101 write(22, ""..., 221) = 221',
  '101 writev(20, [{iov_base=""..., iov_len=208}, {iov_base=""..., iov_len=123}], 2) = 331',
  // A turn forced by pending immediates: a zero-timeout poll that finds nothing, then another.
  '101 epoll_pwait(10, [], 1024, 0, NULL, 8) = 0',
  '101 epoll_pwait(10, [], 1024, 0, NULL, 8) = 0',
  '102 futex(0x55d0, FUTEX_WAIT_PRIVATE, 0, NULL <unfinished ...>',
  '101 epoll_pwait(10,  <unfinished ...>',
  '102 <... futex resumed>) = 0',
  '101 <... epoll_pwait resumed>[{events=EPOLLIN, data={u32=20, u64=20}}], 1024, 49, NULL, 8) = 1',
  '101 read(20, ""..., 65536) = -1 EAGAIN (Resource temporarily unavailable)',
  '101 epoll_pwait(10, [], 1024, 0, NULL, 8) = 0',
  '101 epoll_pwait(10, [], 1024, -1, NULL, 8) = 0',
  '101 --- SIGUSR2 {si_signo=SIGUSR2} ---',
].join('\n');

describe('parseStraceLines', () => {
  it('splits polls by timeout and result, finds forced turns, and joins resumed calls', () => {
    const byTid = parseStraceLines(TRACE);
    expect(byTid.get(101)).toEqual({
      pollsZero: 4,
      pollsZeroWithEvents: 1,
      forcedTurns: 1,
      pollsBlocking: 2,
      pollsBlockingWithEvents: 1,
      events: 3,
      reads: 3,
      readsEmpty: 1,
      writes: 1,
      writevs: 1,
      futex: 0,
    });
    expect(byTid.get(102)?.futex).toBe(1);
  });
});

describe('parsePerfStat', () => {
  it('reads perf stat -x, lines by event name', () => {
    const text = [
      '612.34,msec,task-clock,612340000,100.00,0.123,CPUs utilized',
      '1234,,context-switches,612340000,100.00,2.015,K/sec',
      '<not counted>,,cpu-migrations,0,100.00,,',
    ].join('\n');
    expect([...parsePerfStat(text)]).toEqual([
      ['task-clock', 612.34],
      ['context-switches', 1234],
    ]);
  });
});
