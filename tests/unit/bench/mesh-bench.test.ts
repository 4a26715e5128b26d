import { describe, expect, it } from 'vitest';
import { meshControlFromEnv, passthroughReferenceUs } from '../../../bench/lib/mesh-cpu.ts';
import { slowEpisodes } from '../../../bench/mesh-probe.ts';
import { parseStraceSummary } from '../../../bench/mesh-syscalls.ts';

describe('mesh bench: the CPU group’s control', () => {
  it('holds a sidecar against the cheaper gateway of the chain, or the one gateway', () => {
    expect(passthroughReferenceUs({ passthroughUs: 80, passthroughBackUs: 70 })).toBe(70);
    expect(passthroughReferenceUs({ passthroughUs: 60, passthroughBackUs: 70 })).toBe(60);
    expect(passthroughReferenceUs({ passthroughUs: 60, passthroughBackUs: undefined })).toBe(60);
  });

  it('defaults to the chain and refuses anything but chain or single', () => {
    expect(meshControlFromEnv({})).toBe('chain');
    expect(meshControlFromEnv({ BENCH_MESH_CONTROL: 'single' })).toBe('single');
    expect(() => meshControlFromEnv({ BENCH_MESH_CONTROL: 'pair' })).toThrow(/chain or single/);
  });
});

describe('mesh probe: slow episodes', () => {
  it('groups slow requests in flight together and keeps separate stalls apart', () => {
    // Sent at 0, 10, 20 (held together until ~100) and at 500; 30 and 510 were fast.
    const starts = [0, 10, 20, 30, 500, 510];
    const latencies = [100, 90, 80, 1, 40, 2];
    const episodes = slowEpisodes(starts, latencies, 20);
    expect(episodes).toEqual([
      { startMs: 0, endMs: 100, requests: 3, worstMs: 100 },
      { startMs: 500, endMs: 540, requests: 1, worstMs: 40 },
    ]);
  });

  it('finds none when nothing is slow, in any order of input', () => {
    expect(slowEpisodes([5, 1, 3], [1, 2, 3], 20)).toEqual([]);
    expect(slowEpisodes([50, 0], [30, 30], 20).map((e) => e.startMs)).toEqual([0, 50]);
  });
});

describe('mesh syscalls: strace -c summary', () => {
  it('reads the calls per system call, with and without an errors column, without the total', () => {
    const text = [
      'strace: Process 123 attached',
      '% time     seconds  usecs/call     calls    errors syscall',
      '------ ----------- ----------- --------- --------- ----------------',
      ' 45.00    0.004500           2      4020           read',
      ' 30.00    0.003000           1      6400       512 epoll_pwait',
      '  0.10    0.000010           5         2           io_uring_enter',
      '------ ----------- ----------- --------- --------- ----------------',
      '100.00    0.010000           2     10422       512 total',
    ].join('\n');
    expect([...parseStraceSummary(text)]).toEqual([
      ['read', 4020],
      ['epoll_pwait', 6400],
      ['io_uring_enter', 2],
    ]);
  });
});
