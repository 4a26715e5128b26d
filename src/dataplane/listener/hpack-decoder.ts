/**
 * An HPACK decoder (RFC 7541) for reading what a client really sent in its HTTP/2 header blocks.
 * nghttp2 decodes them too, but silently drops fields it finds invalid and Node offers no hook to
 * learn of it (http2-field-check.ts). This decoder follows the same blocks in the same order, so
 * its dynamic table stays the one nghttp2 has. Names and values come out as latin1 strings: one
 * character per byte, so every byte can be checked.
 */

/** A block this decoder (and so nghttp2, which then ends the connection) cannot decode. */
export class HpackError extends Error {
  override readonly name = 'HpackError';
}

export interface FieldVisitor {
  field(name: string, value: string): void;
}

/** RFC 7541 Appendix A. */
const STATIC_TABLE: readonly (readonly [string, string])[] = [
  [':authority', ''],
  [':method', 'GET'],
  [':method', 'POST'],
  [':path', '/'],
  [':path', '/index.html'],
  [':scheme', 'http'],
  [':scheme', 'https'],
  [':status', '200'],
  [':status', '204'],
  [':status', '206'],
  [':status', '304'],
  [':status', '400'],
  [':status', '404'],
  [':status', '500'],
  ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'],
  ['accept-language', ''],
  ['accept-ranges', ''],
  ['accept', ''],
  ['access-control-allow-origin', ''],
  ['age', ''],
  ['allow', ''],
  ['authorization', ''],
  ['cache-control', ''],
  ['content-disposition', ''],
  ['content-encoding', ''],
  ['content-language', ''],
  ['content-length', ''],
  ['content-location', ''],
  ['content-range', ''],
  ['content-type', ''],
  ['cookie', ''],
  ['date', ''],
  ['etag', ''],
  ['expect', ''],
  ['expires', ''],
  ['from', ''],
  ['host', ''],
  ['if-match', ''],
  ['if-modified-since', ''],
  ['if-none-match', ''],
  ['if-range', ''],
  ['if-unmodified-since', ''],
  ['last-modified', ''],
  ['link', ''],
  ['location', ''],
  ['max-forwards', ''],
  ['proxy-authenticate', ''],
  ['proxy-authorization', ''],
  ['range', ''],
  ['referer', ''],
  ['refresh', ''],
  ['retry-after', ''],
  ['server', ''],
  ['set-cookie', ''],
  ['strict-transport-security', ''],
  ['transfer-encoding', ''],
  ['user-agent', ''],
  ['vary', ''],
  ['via', ''],
  ['www-authenticate', ''],
];

/**
 * Code lengths of the Huffman code (RFC 7541 Appendix B), symbols 0..255 and EOS (256). The code
 * is canonical (codes of one length are consecutive, in symbol order, shorter ones first), so the
 * lengths define it; tests check the Kraft sum and codes listed in the RFC.
 */
export const HUFFMAN_LENGTHS: readonly number[] = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28,
  28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7,
  8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19,
  13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13,
  28, 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21,
  22, 23, 22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23,
  22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
  19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25,
  25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

const EOS = 256;
const MAX_CODE_LENGTH = 30;

/** Canonical decoding tables: per length, the first code, how many codes, where they start. */
const FIRST_CODE = new Int32Array(MAX_CODE_LENGTH + 1);
const COUNT = new Int32Array(MAX_CODE_LENGTH + 1);
const FIRST_INDEX = new Int32Array(MAX_CODE_LENGTH + 1);
const SYMBOLS = new Uint16Array(HUFFMAN_LENGTHS.length);
{
  for (const len of HUFFMAN_LENGTHS) COUNT[len]!++;
  let code = 0;
  let index = 0;
  for (let len = 1; len <= MAX_CODE_LENGTH; len++) {
    code = (code + COUNT[len - 1]!) << 1;
    FIRST_CODE[len] = code;
    FIRST_INDEX[len] = index;
    index += COUNT[len]!;
  }
  const order = [...HUFFMAN_LENGTHS.keys()].sort(
    (a, b) => HUFFMAN_LENGTHS[a]! - HUFFMAN_LENGTHS[b]! || a - b,
  );
  SYMBOLS.set(order);
}

/** The canonical code of a symbol (for tests against the RFC's table). */
export function huffmanCode(symbol: number): number {
  const len = HUFFMAN_LENGTHS[symbol]!;
  let i = FIRST_INDEX[len]!;
  while (SYMBOLS[i] !== symbol) i++;
  return FIRST_CODE[len]! + (i - FIRST_INDEX[len]!);
}

let scratch = Buffer.allocUnsafe(4096);

/** Decode `buf[start, end)` as a Huffman-coded string (RFC 7541 §5.2). */
export function huffmanDecode(buf: Buffer, start: number, end: number): string {
  // The shortest code is 5 bits: at most 8/5 symbols per byte.
  const most = Math.ceil(((end - start) * 8) / 5);
  if (scratch.length < most) scratch = Buffer.allocUnsafe(most);
  const out = scratch;
  let o = 0;
  let code = 0;
  let len = 0;
  for (let i = start; i < end; i++) {
    const byte = buf[i]!;
    for (let bit = 7; bit >= 0; bit--) {
      code = (code << 1) | ((byte >> bit) & 1);
      len++;
      const k = code - FIRST_CODE[len]!;
      if (k >= 0 && k < COUNT[len]!) {
        const symbol = SYMBOLS[FIRST_INDEX[len]! + k]!;
        if (symbol === EOS) throw new HpackError('EOS in a Huffman-coded string');
        out[o++] = symbol;
        code = 0;
        len = 0;
      } else if (len === MAX_CODE_LENGTH) {
        throw new HpackError('invalid Huffman code');
      }
    }
  }
  // Padding: fewer than 8 bits, all ones (a prefix of EOS).
  if (len > 7 || code !== (1 << len) - 1) throw new HpackError('invalid Huffman padding');
  return out.toString('latin1', 0, o);
}

const ENTRY_OVERHEAD = 32;
/** Integers above this are refused (no valid index, length or size is near it). */
const MAX_INTEGER = 1 << 28;

/** The decoder state of one connection's client-to-server direction. */
export class HpackDecoder {
  /** SETTINGS_HEADER_TABLE_SIZE the server announced: the most a size update may ask for. */
  readonly limit: number;
  /** Dynamic table, oldest first (index 62 is the last element). */
  #names: string[] = [];
  #values: string[] = [];
  #size = 0;
  #max: number;
  #pos = 0;

  constructor(limit: number) {
    this.limit = limit;
    this.#max = limit;
  }

  /** Entries in the dynamic table (for tests). */
  get dynamicEntries(): number {
    return this.#names.length;
  }

  /** Decode one complete header block, calling `visitor.field` for each field in order. */
  decode(block: Buffer, visitor: FieldVisitor): void {
    this.#pos = 0;
    const end = block.length;
    while (this.#pos < end) {
      const b = block[this.#pos]!;
      if (b & 0x80) {
        const index = this.#integer(block, 7);
        if (index === 0) throw new HpackError('index 0');
        visitor.field(this.#name(index), this.#value(index));
      } else if (b & 0x40) {
        const index = this.#integer(block, 6);
        const name = index === 0 ? this.#string(block) : this.#name(index);
        const value = this.#string(block);
        visitor.field(name, value);
        this.#insert(name, value);
      } else if (b & 0x20) {
        const size = this.#integer(block, 5);
        if (size > this.limit) throw new HpackError('dynamic table size update over the limit');
        this.#max = size;
        this.#evict(0);
      } else {
        // Without indexing (0000) or never indexed (0001): same layout, 4-bit index.
        const index = this.#integer(block, 4);
        const name = index === 0 ? this.#string(block) : this.#name(index);
        visitor.field(name, this.#string(block));
      }
    }
  }

  #integer(block: Buffer, prefixBits: number): number {
    const mask = (1 << prefixBits) - 1;
    let value = block[this.#pos++]! & mask;
    if (value < mask) return value;
    let shift = 0;
    for (;;) {
      if (this.#pos >= block.length) throw new HpackError('truncated integer');
      const b = block[this.#pos++]!;
      value += (b & 0x7f) * 2 ** shift;
      if (value > MAX_INTEGER) throw new HpackError('integer too large');
      if ((b & 0x80) === 0) return value;
      shift += 7;
    }
  }

  #string(block: Buffer): string {
    if (this.#pos >= block.length) throw new HpackError('truncated string');
    const huffman = (block[this.#pos]! & 0x80) !== 0;
    const length = this.#integer(block, 7);
    const start = this.#pos;
    const end = start + length;
    if (end > block.length) throw new HpackError('truncated string');
    this.#pos = end;
    return huffman ? huffmanDecode(block, start, end) : block.toString('latin1', start, end);
  }

  #name(index: number): string {
    if (index <= STATIC_TABLE.length) return STATIC_TABLE[index - 1]![0];
    return this.#names[this.#dynamic(index)]!;
  }

  #value(index: number): string {
    if (index <= STATIC_TABLE.length) return STATIC_TABLE[index - 1]![1];
    return this.#values[this.#dynamic(index)]!;
  }

  #dynamic(index: number): number {
    const i = this.#names.length - 1 - (index - STATIC_TABLE.length - 1);
    if (i < 0) throw new HpackError('index beyond the dynamic table');
    return i;
  }

  #insert(name: string, value: string): void {
    const size = name.length + value.length + ENTRY_OVERHEAD;
    // An entry larger than the table empties it and is not added (RFC 7541 §4.4).
    this.#evict(size);
    if (size > this.#max) return;
    this.#names.push(name);
    this.#values.push(value);
    this.#size += size;
  }

  /** Evict oldest entries until `room` more bytes fit (all of them when it cannot). */
  #evict(room: number): void {
    let drop = 0;
    while (this.#size + room > this.#max && drop < this.#names.length) {
      this.#size -= this.#names[drop]!.length + this.#values[drop]!.length + ENTRY_OVERHEAD;
      drop++;
    }
    if (drop > 0) {
      this.#names.splice(0, drop);
      this.#values.splice(0, drop);
    }
  }
}
