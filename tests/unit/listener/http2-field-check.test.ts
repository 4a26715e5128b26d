/**
 * The HTTP/2 field check: which fields make a request malformed (RFC 9113 §8.2), and the frame
 * reader that finds them in a client's byte stream however it is cut into chunks.
 */
import { describe, expect, it } from 'vitest';
import {
  fieldProblem,
  Http2FieldCheck,
  MAX_HEADER_BLOCK,
} from '../../../src/dataplane/listener/http2-field-check.ts';
import { PREFACE as CLIENT_PREFACE, frame, literal } from '../../helpers/h2-frames.ts';

describe('fieldProblem', () => {
  it('accepts ordinary fields, pseudo-fields, obs-text and te: trailers', () => {
    for (const [name, value] of [
      ['x-a', 'hello world'],
      ['accept', '*/*'],
      ['x-tab', 'a\tb'],
      ['x-empty', ''],
      ['x-latin', 'caf\u00e9'],
      ["x-!#$%&'*+-.^_`|~09", 'v'],
      [':path', '/a b'],
      ['te', 'trailers'],
    ] as const)
      expect(fieldProblem(name, value), `${name}: ${value}`).toBeUndefined();
  });

  it('refuses control characters, whitespace around values and bad names', () => {
    const bad: [string, string][] = [
      ['x-a', 'a\rb'],
      ['x-a', 'a\nb'],
      ['x-a', 'a\u0000b'],
      ['x-a', 'a\u0001b'],
      ['x-a', 'a\u007fb'],
      ['x-a', ' a'],
      ['x-a', 'a\t'],
      ['x a', '1'],
      ['x:a', '1'],
      ['X-Upper', '1'],
      ['', 'x'],
      ['x\u00e9', '1'],
      ['connection', 'keep-alive'],
      ['keep-alive', 'timeout=5'],
      ['proxy-connection', 'close'],
      ['transfer-encoding', 'chunked'],
      ['upgrade', 'h2c'],
      ['te', 'gzip'],
    ];
    for (const [name, value] of bad)
      expect(fieldProblem(name, value), JSON.stringify([name, value])).toBeDefined();
  });
});

const REQUEST = Buffer.concat([Buffer.from([0x82, 0x87, 0x84]), literal(':authority', 'a.test')]);
const PREFACE = Buffer.concat([CLIENT_PREFACE, frame(4, 0, 0, Buffer.alloc(0))]);

function run(bytes: Buffer, chunkSize: number): { malformed: [number, string][]; lost: string[] } {
  const malformed: [number, string][] = [];
  const lost: string[] = [];
  const check = new Http2FieldCheck({
    malformed: (id, problem) => malformed.push([id, problem]),
    refused: () => {},
    lostSync: (problem) => lost.push(problem),
  });
  for (let off = 0; off < bytes.length; off += chunkSize) check.feed(bytes.subarray(off, off + chunkSize));
  return { malformed, lost };
}

describe('Http2FieldCheck', () => {
  const stream = Buffer.concat([
    PREFACE,
    // 1: fine, with padding and priority.
    frame(
      1,
      0x4 | 0x8 | 0x20 | 0x1,
      1,
      Buffer.concat([Buffer.from([3, 0, 0, 0, 0, 16]), REQUEST, Buffer.alloc(3)]),
    ),
    // A DATA frame, skipped unread.
    frame(0, 0x1, 1, Buffer.from('body bytes \r\n\u0000 here')),
    // 3: CR in a value, split over HEADERS + CONTINUATION.
    frame(1, 0x0, 3, REQUEST),
    frame(9, 0x4, 3, literal('x-bad', 'a\r\nInjected: 1')),
    // 5: NUL in a Huffman-coded value.
    frame(1, 0x5, 5, Buffer.concat([REQUEST, literal('x-huff', 'a\u0000b', true)])),
    // 7: fine again.
    frame(1, 0x5, 7, Buffer.concat([REQUEST, literal('x-good', 'ok', true)])),
    // Trailers on 7 with a bad field: decoded, not flagged (the request was already handed over).
    frame(1, 0x5, 7, literal('x-trailer', 'a\nb')),
    // 9: upper case name.
    frame(1, 0x5, 9, Buffer.concat([REQUEST, literal('X-Upper', '1')])),
  ]);

  for (const size of [1, 7, 64, stream.length]) {
    it(`finds the malformed requests in chunks of ${size} bytes`, () => {
      const { malformed, lost } = run(stream, size);
      expect(lost).toEqual([]);
      expect(malformed.map(([id]) => id)).toEqual([3, 5, 9]);
    });
  }

  it('hands each flagged stream to exactly one end: taken by the listener, reset, or the connection closing', () => {
    const refused: number[] = [];
    const check = new Http2FieldCheck({
      malformed: () => {},
      refused: (id) => refused.push(id),
      lostSync: () => {},
    });
    check.feed(stream);
    expect(check.take(1)).toBe(false);
    expect(check.take(5)).toBe(true);
    expect(check.take(5)).toBe(false);
    // nghttp2 resets 9 itself; its RST_STREAM for the handed-over 5 (or a fine 7) refuses nothing.
    check.streamReset(9);
    check.streamReset(5);
    check.streamReset(7);
    expect(refused).toEqual([9]);
    expect(check.take(9)).toBe(false);
    // 3 was neither taken nor reset when the connection ended.
    check.end();
    expect(refused).toEqual([9, 3]);
    expect(check.malformed.size).toBe(0);
  });

  it('gives up, and says so, on frames it cannot follow', () => {
    const continuationElsewhere = Buffer.concat([
      PREFACE,
      frame(1, 0x0, 1, REQUEST),
      frame(9, 0x4, 3, REQUEST),
    ]);
    expect(run(continuationElsewhere, 5).lost).toEqual(['unexpected CONTINUATION']);
    const badHpack = Buffer.concat([PREFACE, frame(1, 0x5, 1, Buffer.from([0x80]))]);
    expect(run(badHpack, 3).lost[0]).toMatch(/HPACK/);
    const flood = [PREFACE, frame(1, 0x1, 1, REQUEST)];
    for (let size = 0; size <= MAX_HEADER_BLOCK; size += 16_384)
      flood.push(frame(9, 0, 1, Buffer.alloc(16_384)));
    expect(run(Buffer.concat(flood), 16_384).lost).toEqual(['header block too large']);
  });
});
