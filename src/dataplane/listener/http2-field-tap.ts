/**
 * The stream an HTTP/2 session runs on in place of its TLS socket: bytes from the client pass the
 * field check (http2-field-check.ts) on their way to nghttp2; bytes to the client go straight
 * through. Backpressure is kept both ways. Node wraps it in a socket of its own (JSStreamSocket),
 * which costs some CPU per read and write: the price of seeing the frames before nghttp2 does
 * (docs/decisions.md).
 *
 * Over such a socket Node completes each write a turn of the event loop later, and a session
 * destroyed while one is pending drops the frames queued behind it, its final GOAWAY included. So
 * a session the gateway ends on purpose sends its GOAWAY first and is destroyed once the frame has
 * gone out (`afterGoaway`): the tap watches the frame headers of what it writes, RST_STREAM too
 * (a malformed request nghttp2 refused itself is counted then: Http2FieldCheck.streamReset).
 */
import { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { FIELD_CHECK_LOST, type FieldCheckHost, Http2FieldCheck } from './http2-field-check.ts';

const FRAME_HEADER = 9;
const RST_STREAM = 0x3;
const GOAWAY = 0x7;

export class Http2FieldTap extends Duplex {
  readonly socket: TLSSocket;
  readonly check: Http2FieldCheck;
  /** Node's HTTP/2 server reads the negotiated protocol from the socket it is given. */
  readonly alpnProtocol = 'h2';
  readonly encrypted = true;
  /** Outgoing frames: header bytes seen of the current one, payload bytes still to pass. */
  readonly #outHead = Buffer.alloc(FRAME_HEADER);
  #outHeadLength = 0;
  #outSkip = 0;
  #onGoaway: (() => void) | undefined = undefined;
  #stopped = false;

  /** `report` hears of malformed requests; a connection whose frames cannot be followed is ended. */
  constructor(socket: TLSSocket, report: FieldCheckHost) {
    super({ allowHalfOpen: false });
    this.socket = socket;
    this.check = new Http2FieldCheck({
      malformed: report.malformed,
      refused: report.refused,
      lostSync: (problem: string) => {
        report.lostSync(problem);
        const err: NodeJS.ErrnoException = new Error(`HTTP/2 field check: ${problem}`);
        err.code = FIELD_CHECK_LOST;
        this.destroy(err);
      },
    });
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
  }

  /** Call `fn` once a GOAWAY frame has been handed to the TLS socket (at once if it is gone). */
  afterGoaway(fn: () => void): void {
    if (this.socket.destroyed) fn();
    else this.#onGoaway = fn;
  }

  /** Nothing more the client sends is read: the session is being ended. */
  stopReading(): void {
    this.#stopped = true;
    this.socket.pause();
  }

  #onData = (chunk: Buffer): void => {
    if (this.#stopped) return;
    this.check.feed(chunk);
    if (!this.push(chunk)) this.socket.pause();
  };

  #onEnd = (): void => {
    this.push(null);
  };

  #onError = (err: Error): void => {
    this.destroy(err);
  };

  #onClose = (): void => {
    this.check.end();
    this.destroy();
    this.#goawaySent();
  };

  override _read(): void {
    if (!this.#stopped) this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.socket.write(chunk, cb);
    this.#scanOut(chunk);
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    const socket = this.socket;
    socket.cork();
    const last = chunks.length - 1;
    for (let i = 0; i < last; i++) socket.write(chunks[i]!.chunk);
    socket.write(chunks[last]!.chunk, cb);
    socket.uncork();
    for (const { chunk } of chunks) this.#scanOut(chunk);
  }

  /** Wait for the TLS socket to flush what it was given: the session's last frames. */
  override _final(cb: (err?: Error | null) => void): void {
    this.socket.end(cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // A session ending on its own has ended the socket first (_final): let it finish sending.
    if (err === null && this.socket.writableEnded) this.socket.destroySoon();
    else this.socket.destroy();
    cb(err);
  }

  /** Follows the headers of outgoing frames (their payloads are passed over unread). */
  #scanOut(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) {
      if (this.#outSkip > 0) {
        const k = Math.min(this.#outSkip, chunk.length - off);
        this.#outSkip -= k;
        off += k;
        continue;
      }
      const k = Math.min(FRAME_HEADER - this.#outHeadLength, chunk.length - off);
      chunk.copy(this.#outHead, this.#outHeadLength, off, off + k);
      this.#outHeadLength += k;
      off += k;
      if (this.#outHeadLength < FRAME_HEADER) return;
      this.#outHeadLength = 0;
      this.#outSkip = this.#outHead.readUIntBE(0, 3);
      const type = this.#outHead[3];
      if (type === GOAWAY && this.#onGoaway !== undefined) queueMicrotask(() => this.#goawaySent());
      else if (type === RST_STREAM && this.check.malformed.size !== 0)
        this.check.streamReset(this.#outHead.readUInt32BE(5) & 0x7fffffff);
    }
  }

  #goawaySent(): void {
    const fn = this.#onGoaway;
    this.#onGoaway = undefined;
    fn?.();
  }
}
