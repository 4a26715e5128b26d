/**
 * Where log lines go: the process's stdout, through pino's asynchronous destination (SonicBoom)
 * in its buffer mode, with the access log's lines gathered into chunks of up to 25 ms. Why buffer
 * mode and why 25 ms, with the measurements: docs/decisions.md, "Logging".
 */
import pino from 'pino';

type SonicBoom = ReturnType<typeof pino.destination>;

/** Bytes of slab allocated at a time; regions handed to the destination are never written again. */
const SLAB_BYTES = 128 * 1024;

/** A batch is handed over once it holds this many bytes... */
export const MAX_BATCH_BYTES = 64 * 1024;

/** ...or this long after its first line. */
export const FLUSH_DELAY_MS = 25;

/**
 * Lines gathered for up to FLUSH_DELAY_MS (or MAX_BATCH_BYTES) and handed on as one chunk; at
 * once when `flush` is called. Order is kept. Each line is UTF-8 encoded once, into a slab; a
 * handed-over chunk is a view of the slab, and that region is never written again (a full slab is
 * replaced, not reused), so the receiver may hold the chunk for as long as its write takes.
 */
export class LineBatch {
  readonly #out: (chunk: Buffer) => unknown;
  #slab = Buffer.allocUnsafe(SLAB_BYTES);
  /** Start of the bytes not handed over yet. */
  #start = 0;
  /** End of the bytes written. */
  #end = 0;
  #timer: NodeJS.Timeout | undefined;

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
    else this.#timer ??= setTimeout(flushLater, FLUSH_DELAY_MS, this);
  }

  /** Hand over what is queued now. */
  flush(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#end === this.#start) return;
    const chunk = this.#slab.subarray(this.#start, this.#end);
    this.#start = this.#end;
    this.#out(chunk);
  }
}

function flushLater(batch: LineBatch): void {
  batch.flush();
}

/**
 * pino's destination by default: stdout, asynchronous. pino's own lines (diagnostics, errors)
 * are written at once, after any access lines still queued, so the log keeps the order in which
 * lines were produced.
 *
 * It counts the bytes it hands to SonicBoom and the bytes SonicBoom reports written (its public
 * `write` event), so `drain` knows when everything is on its way to the fd without reading
 * SonicBoom's private state.
 */
export class LogDestination {
  /** The asynchronous writer (buffer mode). pino's exit handler flushes it on process exit. */
  readonly boom: SonicBoom;
  /** The access log's queue. */
  readonly lines: LineBatch;
  #handed = 0;
  #written = 0;
  #waiters: (() => void)[] = [];

  constructor(fd = 1) {
    const boom = pino.destination({ dest: fd, sync: false, contentMode: 'buffer' });
    this.boom = boom;
    boom.on('write', (n: number) => {
      this.#written += n;
      if (this.#written >= this.#handed) for (const wake of this.#waiters.splice(0)) wake();
    });
    // Looked up on every call: pino replaces `write` with a no-op after EPIPE.
    const writer = boom as unknown as { write(chunk: Buffer): boolean };
    this.lines = new LineBatch((chunk) => {
      this.#handed += chunk.length;
      writer.write(chunk);
    });
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

  /**
   * Hand over the queued lines and wait until every byte handed over so far is written, for at
   * most `timeoutMs`; true when it all was. Never rejects.
   */
  drain(timeoutMs: number): Promise<boolean> {
    this.lines.flush();
    if (this.#written >= this.#handed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        resolve(this.#written >= this.#handed);
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== done);
        done();
      }, timeoutMs);
      this.#waiters.push(done);
    });
  }
}
