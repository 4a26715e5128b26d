/**
 * RFC 9113 §8.2: a request with an invalid field (a value with NUL, CR, LF or another control
 * character, or leading or trailing whitespace; a name that is empty, upper case or not a token,
 * `:` included; a connection-specific field; `te` other than `trailers`) is malformed and must not
 * be forwarded. nghttp2 refuses some of these itself (RST_STREAM PROTOCOL_ERROR), but drops the
 * others silently and hands the rest of the request over, and Node (which registers nghttp2's
 * invalid-header callback to ignore them) offers no way to learn of it. So the gateway reads the
 * client's frames itself, before nghttp2: HEADERS and CONTINUATION payloads are decoded
 * (hpack-decoder.ts), everything else is skipped unread.
 */
import { HpackDecoder, HpackError } from './hpack-decoder.ts';

/** The server's SETTINGS_HEADER_TABLE_SIZE (the listener announces it): the decoder's table limit. */
export const HPACK_TABLE_SIZE = 4096;

/**
 * Header blocks larger than this end the connection. nghttp2 (SETTINGS_MAX_FRAME_SIZE 16 KiB, at
 * most 8 CONTINUATION frames) refuses any block this big itself, so no usable connection is lost;
 * the bound keeps a CONTINUATION flood from growing this buffer.
 */
export const MAX_HEADER_BLOCK = 160 * 1024;

const PREFACE_LENGTH = 24;
const FRAME_HEADER = 9;
const HEADERS = 0x1;
const CONTINUATION = 0x9;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY = 0x20;

/** tchar (RFC 9110 §5.6.2) without upper case letters (RFC 9113 §8.2.1). */
const NAME_CHARS = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz") NAME_CHARS[c.charCodeAt(0)] = 1;

/** RFC 9113 §8.2.2. */
const CONNECTION_SPECIFIC: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
]);

/** Why a regular field makes its request malformed, or undefined. Pseudo-fields are nghttp2's. */
export function fieldProblem(name: string, value: string): string | undefined {
  if (name.length === 0) return 'empty field name';
  if (name.charCodeAt(0) === 58 /* : */) return undefined;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c >= 128 || NAME_CHARS[c] === 0) return 'invalid character in a field name';
  }
  const last = value.length - 1;
  for (let i = 0; i <= last; i++) {
    const c = value.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return 'control character in a field value';
  }
  if (last >= 0) {
    const first = value.charCodeAt(0);
    const end = value.charCodeAt(last);
    if (first === 0x20 || first === 0x09 || end === 0x20 || end === 0x09)
      return 'whitespace around a field value';
  }
  if (CONNECTION_SPECIFIC.has(name)) return 'connection-specific field';
  if (name === 'te' && value !== 'trailers') return 'te other than trailers';
  return undefined;
}

/** The error code a connection ends with when its frames could not be followed. */
export const FIELD_CHECK_LOST = 'PEREGRINE_HTTP2_FIELD_CHECK';

export interface FieldCheckHost {
  /** The request header block of `streamId` is malformed. */
  malformed(streamId: number, problem: string): void;
  /**
   * A malformed request that never reached the listener: nghttp2 reset its stream, or the
   * connection ended first. Once per stream; the ones handed over are the listener's (take()).
   */
  refused(streamId: number): void;
  /** The frames cannot be followed (nghttp2 ends such a connection too): end the connection. */
  lostSync(problem: string): void;
}

/** Reads one connection's client-to-server bytes, in order, as they go to nghttp2. */
export class Http2FieldCheck {
  readonly host: FieldCheckHost;
  readonly #decoder = new HpackDecoder(HPACK_TABLE_SIZE);
  #preface = PREFACE_LENGTH;
  readonly #head = Buffer.alloc(FRAME_HEADER);
  #headLength = 0;
  /** Payload bytes of the current frame still to skip (not a header frame). */
  #skip = 0;
  /** Payload bytes of the current HEADERS or CONTINUATION frame still to collect. */
  #want = 0;
  #type = 0;
  #flags = 0;
  #stream = 0;
  #payload: Buffer[] = [];
  #payloadLength = 0;
  /** The header block being collected (until END_HEADERS): its stream and fragments. */
  #blockStream = 0;
  #block: Buffer[] = [];
  #blockLength = 0;
  /** The highest stream whose request headers were read: a HEADERS at or below it is trailers. */
  #highest = 0;
  #problem: string | undefined = undefined;
  #lost = false;

  constructor(host: FieldCheckHost) {
    this.host = host;
  }

  /**
   * Streams whose request headers are malformed, until the listener takes them or nghttp2 resets
   * them (each flagged stream ends one way or the other, or with the connection).
   */
  readonly malformed = new Set<number>();

  /** True once (and only once) for a stream flagged malformed: the listener refuses it. */
  take(streamId: number): boolean {
    return this.malformed.size !== 0 && this.malformed.delete(streamId);
  }

  /** The server sent RST_STREAM for `streamId`: a flagged stream it never handed over was refused. */
  streamReset(streamId: number): void {
    if (this.malformed.delete(streamId)) this.host.refused(streamId);
  }

  /** The connection ended: flagged streams still waiting were never answered. */
  end(): void {
    for (const id of this.malformed) this.host.refused(id);
    this.malformed.clear();
  }

  feed(chunk: Buffer): void {
    if (this.#lost) return;
    const n = chunk.length;
    let off = 0;
    while (off < n) {
      if (this.#preface > 0) {
        const k = Math.min(this.#preface, n - off);
        this.#preface -= k;
        off += k;
      } else if (this.#skip > 0) {
        const k = Math.min(this.#skip, n - off);
        this.#skip -= k;
        off += k;
      } else if (this.#want > 0) {
        const k = Math.min(this.#want, n - off);
        this.#payload.push(chunk.subarray(off, off + k));
        this.#payloadLength += k;
        this.#want -= k;
        off += k;
        if (this.#want === 0) this.#headerFrame();
      } else {
        const k = Math.min(FRAME_HEADER - this.#headLength, n - off);
        chunk.copy(this.#head, this.#headLength, off, off + k);
        this.#headLength += k;
        off += k;
        if (this.#headLength === FRAME_HEADER) this.#frameHeader();
      }
      if (this.#lost) return;
    }
  }

  #frameHeader(): void {
    this.#headLength = 0;
    const head = this.#head;
    const length = head.readUIntBE(0, 3);
    const type = head[3]!;
    if (type !== HEADERS && type !== CONTINUATION) {
      if (this.#blockStream !== 0) this.#lose('frame inside a header block');
      this.#skip = length;
      return;
    }
    if (this.#blockLength + length > MAX_HEADER_BLOCK) {
      this.#lose('header block too large');
      return;
    }
    this.#type = type;
    this.#flags = head[4]!;
    this.#stream = head.readUInt32BE(5) & 0x7fffffff;
    this.#want = length;
    if (length === 0) this.#headerFrame();
  }

  #headerFrame(): void {
    const parts = this.#payload;
    const payload = parts.length === 1 ? parts[0]! : Buffer.concat(parts, this.#payloadLength);
    this.#payload = [];
    this.#payloadLength = 0;
    const flags = this.#flags;
    if (this.#type === HEADERS) {
      if (this.#blockStream !== 0) {
        this.#lose('HEADERS inside a header block');
        return;
      }
      let start = 0;
      let end = payload.length;
      if (flags & PADDED) {
        if (end < 1) {
          this.#lose('bad padding');
          return;
        }
        end -= payload[0]!;
        start = 1;
      }
      if (flags & PRIORITY) start += 5;
      if (start > end) {
        this.#lose('bad padding');
        return;
      }
      this.#blockStream = this.#stream;
      this.#add(payload.subarray(start, end));
    } else {
      if (this.#blockStream === 0 || this.#stream !== this.#blockStream) {
        this.#lose('unexpected CONTINUATION');
        return;
      }
      this.#add(payload);
    }
    if (flags & END_HEADERS) this.#endBlock();
  }

  #add(fragment: Buffer): void {
    this.#block.push(fragment);
    this.#blockLength += fragment.length;
  }

  #endBlock(): void {
    const parts = this.#block;
    const block = parts.length === 1 ? parts[0]! : Buffer.concat(parts, this.#blockLength);
    const stream = this.#blockStream;
    this.#block = [];
    this.#blockLength = 0;
    this.#blockStream = 0;
    this.#problem = undefined;
    try {
      this.#decoder.decode(block, this);
    } catch (err) {
      if (err instanceof HpackError) {
        this.#lose(`HPACK: ${err.message}`);
        return;
      }
      throw err;
    }
    // Trailers (and anything nghttp2 refuses on an old stream) are decoded only to stay in step.
    if (stream <= this.#highest) return;
    this.#highest = stream;
    const problem = this.#problem;
    if (problem !== undefined) {
      this.malformed.add(stream);
      this.host.malformed(stream, problem);
    }
  }

  /** FieldVisitor: the first problem of the block is kept. */
  field(name: string, value: string): void {
    if (this.#problem === undefined) this.#problem = fieldProblem(name, value);
  }

  #lose(problem: string): void {
    this.#lost = true;
    this.#block = [];
    this.#payload = [];
    this.host.lostSync(problem);
  }
}
