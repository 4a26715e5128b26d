/**
 * The HPACK decoder the HTTP/2 field check reads client header blocks with: the RFC 7541 Huffman
 * code and examples (Appendix B, C.3, C.4), malformed input, and blocks from nghttp2's own encoder
 * (Node's HTTP/2 client) over several requests, so the dynamic table is exercised as in real use.
 */
import { connect as h2connect } from 'node:http2';
import { createServer, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  HpackDecoder,
  HpackError,
  HUFFMAN_LENGTHS,
  huffmanCode,
  huffmanDecode,
} from '../../../src/dataplane/listener/hpack-decoder.ts';
import { huffmanEncode } from '../../helpers/h2-frames.ts';

const hex = (s: string): Buffer => Buffer.from(s.replaceAll(' ', ''), 'hex');

function decodeAll(decoder: HpackDecoder, block: Buffer): [string, string][] {
  const fields: [string, string][] = [];
  decoder.decode(block, { field: (name, value) => fields.push([name, value]) });
  return fields;
}

describe('Huffman code (RFC 7541 Appendix B)', () => {
  it('is a complete prefix code over 257 symbols', () => {
    expect(HUFFMAN_LENGTHS).toHaveLength(257);
    expect(HUFFMAN_LENGTHS.reduce((sum, len) => sum + 2 ** -len, 0)).toBe(1);
  });

  it('gives the codes the RFC lists', () => {
    const listed: [number, number][] = [
      [0, 0x1ff8],
      [1, 0x7fffd8],
      [10, 0x3ffffffc],
      [32, 0x14],
      [48, 0x0],
      [60, 0x7ffc],
      [92, 0x7fff0],
      [97, 0x3],
      [126, 0x1ffd],
      [127, 0xffffffc],
      [128, 0xfffe6],
      [153, 0x1fffdc],
      [199, 0x1ffffec],
      [203, 0x7ffffde],
      [220, 0xffffffd],
      [255, 0x3ffffee],
      [256, 0x3fffffff],
    ];
    for (const [symbol, code] of listed) expect(huffmanCode(symbol), String(symbol)).toBe(code);
  });

  it('decodes the RFC examples (C.4) and every byte value', () => {
    const dec = (h: string) => {
      const b = hex(h);
      return huffmanDecode(b, 0, b.length);
    };
    expect(dec('f1e3 c2e5 f23a 6ba0 ab90 f4ff')).toBe('www.example.com');
    expect(dec('a8eb 1064 9cbf')).toBe('no-cache');
    expect(dec('25a8 49e9 5ba9 7d7f')).toBe('custom-key');
    expect(dec('25a8 49e9 5bb8 e8b4 bf')).toBe('custom-value');
    const all = String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i));
    const encoded = huffmanEncode(all);
    expect(huffmanDecode(encoded, 0, encoded.length)).toBe(all);
  });

  it('refuses bad padding and EOS', () => {
    // 'a' (00011) padded with zeros instead of ones.
    expect(() => huffmanDecode(Buffer.from([0x18]), 0, 1)).toThrow(HpackError);
    // A whole byte of padding.
    expect(() => huffmanDecode(Buffer.from([0x1f, 0xff]), 0, 2)).toThrow(HpackError);
    // EOS itself (30 ones).
    expect(() => huffmanDecode(Buffer.from([0xff, 0xff, 0xff, 0xff]), 0, 4)).toThrow(HpackError);
  });
});

describe('HpackDecoder', () => {
  it('decodes the request examples of RFC 7541 C.3 (plain) and C.4 (Huffman), table carried over', () => {
    for (const blocks of [
      [
        '8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d',
        '8286 84be 5808 6e6f 2d63 6163 6865',
        '8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65',
      ],
      [
        '8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff',
        '8286 84be 5886 a8eb 1064 9cbf',
        '8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf',
      ],
    ]) {
      const decoder = new HpackDecoder(4096);
      expect(decodeAll(decoder, hex(blocks[0]!))).toEqual([
        [':method', 'GET'],
        [':scheme', 'http'],
        [':path', '/'],
        [':authority', 'www.example.com'],
      ]);
      expect(decodeAll(decoder, hex(blocks[1]!))).toEqual([
        [':method', 'GET'],
        [':scheme', 'http'],
        [':path', '/'],
        [':authority', 'www.example.com'],
        ['cache-control', 'no-cache'],
      ]);
      expect(decodeAll(decoder, hex(blocks[2]!))).toEqual([
        [':method', 'GET'],
        [':scheme', 'https'],
        [':path', '/index.html'],
        [':authority', 'www.example.com'],
        ['custom-key', 'custom-value'],
      ]);
      expect(decoder.dynamicEntries).toBe(3);
    }
  });

  it('evicts on a size update and refuses one over the limit', () => {
    const decoder = new HpackDecoder(4096);
    decodeAll(decoder, hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d'));
    expect(decoder.dynamicEntries).toBe(1);
    decodeAll(decoder, Buffer.from([0x20])); // size update to 0
    expect(decoder.dynamicEntries).toBe(0);
    expect(() => decodeAll(decoder, Buffer.from([0xbe]))).toThrow(HpackError); // index 62: gone
    // 4097: 0x3f (31) then 4066 = 0xe2 0x1f
    expect(() => decodeAll(decoder, Buffer.from([0x3f, 0xe2, 0x1f]))).toThrow(/over the limit/);
  });

  it('refuses index 0, truncated strings and runaway integers', () => {
    const decoder = new HpackDecoder(4096);
    expect(() => decodeAll(decoder, Buffer.from([0x80]))).toThrow(HpackError);
    expect(() => decodeAll(decoder, Buffer.from([0x00, 0x05, 0x61]))).toThrow(/truncated/);
    expect(() => decodeAll(decoder, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]))).toThrow(HpackError);
  });

  it("follows nghttp2's own encoder over many requests (dynamic table, Huffman, never-indexed)", async () => {
    const sent: Record<string, string>[] = [];
    for (let i = 0; i < 40; i++) {
      sent.push({
        ':method': i % 3 === 0 ? 'POST' : 'GET',
        ':path': `/items/${i % 5}?q=${'x'.repeat(i)}`,
        'user-agent': 'decoder-test/1.0',
        'x-tenant': `tenant-${i % 4}`,
        'x-long': 'a'.repeat(200 + i * 20),
        'x-odd': `é~{}|\\^${i}`,
        authorization: `Bearer token-${i}`,
      });
    }
    const blocks = await captureRequestBlocks(sent);
    const decoder = new HpackDecoder(4096);
    expect(blocks).toHaveLength(sent.length);
    blocks.forEach((block, i) => {
      const fields = decodeAll(decoder, block);
      const got = Object.fromEntries(fields.filter(([n]) => n !== ':scheme' && n !== ':authority'));
      // Node sends header strings as latin1, one byte per character, as the decoder returns them.
      expect(got).toEqual(sent[i]);
    });
  });
});

/** The HEADERS payloads Node's HTTP/2 client sends for `requests`, captured on a raw TCP server. */
async function captureRequestBlocks(requests: Record<string, string>[]): Promise<Buffer[]> {
  let conn: Socket | undefined;
  const chunks: Buffer[] = [];
  const server = createServer((s) => {
    conn = s;
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const client = h2connect(`http://127.0.0.1:${port}`);
  client.on('error', () => {});
  for (const headers of requests) {
    const stream = client.request(headers, { endStream: true });
    stream.on('error', () => {});
  }
  const blocks: Buffer[] = [];
  for (let i = 0; i < 100 && blocks.length < requests.length; i++) {
    await new Promise((r) => setTimeout(r, 20));
    blocks.length = 0;
    const buf = Buffer.concat(chunks).subarray(24);
    for (let off = 0; off + 9 <= buf.length; ) {
      const len = buf.readUIntBE(off, 3);
      if (off + 9 + len > buf.length) break;
      // HEADERS with END_HEADERS, no padding or priority (what Node's client sends).
      if (buf[off + 3] === 1) blocks.push(buf.subarray(off + 9, off + 9 + len));
      off += 9 + len;
    }
  }
  client.destroy();
  conn?.destroy();
  await new Promise((r) => server.close(r));
  return blocks;
}
