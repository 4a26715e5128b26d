/** Raw HTTP/2 frames and HPACK fields, for tests that must send what Node's client refuses to. */
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import { HUFFMAN_LENGTHS, huffmanCode } from '../../src/dataplane/listener/hpack-decoder.ts';

/** A TLS connection to a gateway listener on 127.0.0.1 offering only h2, for raw frames. */
export function h2Socket(port: number, ca: string): TLSSocket {
  return tlsConnect({ host: '127.0.0.1', port, ca, servername: 'localhost', ALPNProtocols: ['h2'] });
}

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

export function frame(type: number, flags: number, id: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(id, 5);
  return Buffer.concat([head, payload]);
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** Huffman-encode `text` (latin1) with RFC 7541's code. */
export function huffmanEncode(text: string): Buffer {
  let bits = '';
  for (const ch of Buffer.from(text, 'latin1')) {
    bits += huffmanCode(ch).toString(2).padStart(HUFFMAN_LENGTHS[ch]!, '0');
  }
  bits += '1'.repeat((8 - (bits.length % 8)) % 8);
  const out = Buffer.alloc(bits.length / 8);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(bits.slice(i * 8, i * 8 + 8), 2);
  return out;
}

/** An HPACK literal field without indexing, with a new name; the value raw or Huffman-coded. */
export function literal(name: string, value: string, huffman = false): Buffer {
  const n = Buffer.from(name, 'latin1');
  const v = huffman ? huffmanEncode(value) : Buffer.from(value, 'latin1');
  if (n.length > 126 || v.length > 126) throw new Error('literal(): keep test fields short');
  return Buffer.concat([Buffer.from([0x00, n.length]), n, Buffer.from([(huffman ? 0x80 : 0) | v.length]), v]);
}
