/**
 * Where log lines go: the process's stdout, through pino's asynchronous destination (SonicBoom)
 * in its buffer mode, with the access log's lines gathered per event-loop turn into one chunk.
 *
 * Why buffer mode: in its default string mode SonicBoom measures the UTF-8 length of every
 * string it is handed, keeps the queue as one growing string, and encodes it twice (once for the
 * write, and again, with `Buffer.from`, to drop what was written). For the access log, at one
 * line per request, that was about 4k instructions per request (callgrind). Here each line is
 * encoded once, straight into a slab that the write then uses as it is.
 */
import pino from 'pino';

type SonicBoom = ReturnType<typeof pino.destination>;

/** Bytes of slab allocated at a time; regions handed to the destination are never written again. */
const SLAB_BYTES = 64 * 1024;

/** A batch is handed over once it reaches this many bytes (SonicBoom writes 16 KiB per call). */
export const MAX_BATCH_BYTES = 16 * 1024;

/**
 * Lines gathered over one turn of the event loop and handed on as one chunk: at the end of the
 * turn that produced them, at once when the batch is full, or when `flush` is called. Order is
 * kept. Each line is UTF-8 encoded once, into a slab; a handed-over chunk is a view of the slab,
 * and that region is never written again (a full slab is replaced, not reused), so the receiver
 * may hold the chunk for as long as its write takes.
 */
export class LineBatch {
  readonly #out: (chunk: Buffer) => unknown;
  #slab = Buffer.allocUnsafe(SLAB_BYTES);
  /** Start of the bytes not handed over yet. */
  #start = 0;
  /** End of the bytes written. */
  #end = 0;
  #scheduled = false;

  constructor(out: (chunk: Buffer) => unknown) {
    this.#out = out;
  }

  /** Queue one line (with its newline). */
  add(line: string): void {
    // A UTF-16 code unit takes at most 3 bytes of UTF-8 (a surrogate pair: 4 bytes for 2 units).
    const worst = line.length * 3;
    if (worst > this.#slab.length - this.#end) {
      this.flush();
      this.#slab = Buffer.allocUnsafe(Math.max(SLAB_BYTES, worst));
      this.#start = 0;
      this.#end = 0;
    }
    this.#end += this.#slab.write(line, this.#end);
    if (this.#end - this.#start >= MAX_BATCH_BYTES) this.flush();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(flushScheduled, this);
    }
  }

  scheduledTurnEnded(): void {
    this.#scheduled = false;
    this.flush();
  }

  /** Hand over what is queued now. */
  flush(): void {
    if (this.#end === this.#start) return;
    const chunk = this.#slab.subarray(this.#start, this.#end);
    this.#start = this.#end;
    this.#out(chunk);
  }
}

function flushScheduled(batch: LineBatch): void {
  batch.scheduledTurnEnded();
}

/**
 * pino's destination by default: stdout, asynchronous. pino's own lines (diagnostics, errors)
 * are written at once, after any access lines still queued, so the log keeps the order in which
 * lines were produced.
 */
export class LogDestination {
  /** The asynchronous writer (buffer mode). pino's exit handler flushes it on process exit. */
  readonly boom: SonicBoom;
  /** The access log's queue. */
  readonly lines: LineBatch;

  constructor(fd = 1) {
    const boom = pino.destination({ dest: fd, sync: false, contentMode: 'buffer' });
    this.boom = boom;
    // Looked up on every call: pino replaces `write` with a no-op after EPIPE.
    const writer = boom as unknown as { write(chunk: Buffer): boolean };
    this.lines = new LineBatch((chunk) => writer.write(chunk));
  }

  /** pino's lines: queued behind pending access lines and handed over at once. */
  write(line: string): void {
    this.lines.add(line);
    this.lines.flush();
  }

  /** pino's `logger.flush(cb)`. */
  flush(cb?: (err?: Error) => void): void {
    this.lines.flush();
    this.boom.flush(cb);
  }
}
