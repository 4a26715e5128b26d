import { describe, expect, it } from 'vitest';
import { SseReader } from '../../../bench/lib/sse.ts';

describe('SseReader (the registry watch stream as the bench reads it)', () => {
  it('returns each event once its block is complete, whatever the chunking', () => {
    const stream =
      'event: snapshot\ndata: {"instances":[]}\n\n: keep-alive\n\nevent: change\ndata: {"type":"upsert"}\n\n';
    for (const size of [1, 2, 7, stream.length]) {
      const r = new SseReader();
      const events = [];
      for (let i = 0; i < stream.length; i += size) events.push(...r.push(stream.slice(i, i + size)));
      expect(events, `chunks of ${size}`).toEqual([
        { event: 'snapshot', data: '{"instances":[]}' },
        { event: 'change', data: '{"type":"upsert"}' },
      ]);
    }
  });

  it('holds an incomplete block back until its blank line arrives', () => {
    const r = new SseReader();
    expect(r.push('event: change\ndata: 1\n')).toEqual([]);
    expect(r.push('\n')).toEqual([{ event: 'change', data: '1' }]);
  });

  it('reads CRLF and CR line ends, also when a CRLF is split between chunks', () => {
    const r = new SseReader();
    expect(r.push('event: a\r\ndata: x\r')).toEqual([]);
    expect(r.push('\n\r\n')).toEqual([{ event: 'a', data: 'x' }]);
    // A CR ending a chunk may be the first half of a CRLF: it counts once the next chunk shows.
    expect(r.push('data: y\r\r')).toEqual([]);
    expect(r.push(': more')).toEqual([{ event: 'message', data: 'y' }]);
  });

  it('joins data lines, skips comments and events without data, names unnamed events message', () => {
    const r = new SseReader();
    expect(r.push(': comment\ndata: one\ndata:two\n\nevent: empty\n\n')).toEqual([
      { event: 'message', data: 'one\ntwo' },
    ]);
  });
});
