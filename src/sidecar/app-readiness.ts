/**
 * The local application's readiness, as its readiness path says: `GET <app><path>` every
 * `interval`, ready on a 2xx within `timeout`, not ready on anything else (another status, a
 * refused connection, no answer). The sidecar registers once it is first ready, and follows it
 * afterwards: an application that stops being ready (it is shutting down, or overloaded) is
 * drained from the registry until it is ready again.
 */
import { EventEmitter } from 'node:events';
import { Agent, request } from 'undici';

export interface AppReadinessOptions {
  /** Origin of the application, e.g. http://127.0.0.1:8080. */
  readonly app: string;
  readonly path: string;
  readonly intervalMs: number;
  readonly timeoutMs: number;
}

/** Events: `change` (ready: boolean), on every change after the first answer. */
export class AppReadiness extends EventEmitter {
  readonly url: string;
  readonly #opts: AppReadinessOptions;
  readonly #agent: Agent;
  #ready = false;
  /** What the last check found, for the admin API. */
  #last: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #waiters: (() => void)[] = [];

  constructor(opts: AppReadinessOptions) {
    super();
    this.#opts = opts;
    this.url = new URL(opts.path, opts.app).href;
    // Its own connection: a probe never queues behind the application's traffic.
    this.#agent = new Agent({ connections: 1, keepAliveTimeout: Math.max(1000, opts.intervalMs * 2) });
  }

  get ready(): boolean {
    return this.#ready;
  }

  get lastCheck(): string | undefined {
    return this.#last;
  }

  start(): void {
    if (this.#timer === undefined && !this.#closed) void this.#check();
  }

  /** Resolves the first time the application is ready (at once if it is). */
  whenReady(): Promise<void> {
    if (this.#ready) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  async #check(): Promise<void> {
    const ok = await this.#probe();
    if (this.#closed) return;
    if (ok !== this.#ready) {
      this.#ready = ok;
      this.emit('change', ok);
      if (ok) for (const w of this.#waiters.splice(0)) w();
    }
    this.#timer = setTimeout(() => void this.#check(), this.#opts.intervalMs);
    this.#timer.unref();
  }

  async #probe(): Promise<boolean> {
    const timeout = this.#opts.timeoutMs;
    try {
      const res = await request(this.url, {
        dispatcher: this.#agent,
        headersTimeout: timeout,
        bodyTimeout: timeout,
        signal: AbortSignal.timeout(timeout),
      });
      await res.body.dump();
      this.#last = `${res.statusCode}`;
      return res.statusCode >= 200 && res.statusCode < 300;
    } catch (err) {
      this.#last = (err as { code?: string }).code ?? (err as Error).message;
      return false;
    }
  }

  /** Stop probing. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#agent.close();
  }
}
