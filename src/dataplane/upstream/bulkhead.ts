import { GatewayError } from '../../errors.ts';
import type { BulkheadConfig } from './policy-schema.ts';

interface Waiter {
  resolve: (error: GatewayError | undefined) => void;
  timer: NodeJS.Timeout | undefined;
}

function queueTimedOut(bulkhead: Bulkhead, waiter: Waiter): void {
  bulkhead.expire(waiter);
}

/**
 * Concurrency isolation per upstream: at most `maxConcurrent` requests hold a slot, up to
 * `maxQueued` more wait for one (first come, first served) for at most `queueTimeout`, and the
 * rest are refused with UPSTREAM_OVERLOADED. A slow upstream then fills its own slots and queue,
 * not the gateway's memory and sockets. Only built when maxConcurrent > 0.
 */
export class Bulkhead {
  readonly maxConcurrent: number;
  readonly maxQueued: number;
  readonly #queueTimeoutMs: number;
  readonly #upstream: string;
  #active = 0;
  readonly #queue: Waiter[] = [];

  constructor(cfg: BulkheadConfig, upstream: string) {
    this.maxConcurrent = cfg.maxConcurrent;
    this.maxQueued = cfg.maxQueued;
    this.#queueTimeoutMs = cfg.queueTimeout;
    this.#upstream = upstream;
  }

  get active(): number {
    return this.#active;
  }

  get queued(): number {
    return this.#queue.length;
  }

  /** Take a slot now if one is free. */
  tryAcquire(): boolean {
    if (this.#active >= this.maxConcurrent) return false;
    this.#active++;
    return true;
  }

  canQueue(): boolean {
    return this.#queue.length < this.maxQueued;
  }

  /** Wait for a slot: resolves undefined holding one, or with UPSTREAM_OVERLOADED on timeout. */
  enqueue(): Promise<GatewayError | undefined> {
    return new Promise((resolve) => {
      const waiter: Waiter = { resolve, timer: undefined };
      if (this.#queueTimeoutMs > 0)
        waiter.timer = setTimeout(queueTimedOut, this.#queueTimeoutMs, this, waiter).unref();
      this.#queue.push(waiter);
    });
  }

  /** Give a slot back: it passes straight to the longest waiter, if any. */
  release(): void {
    const next = this.#queue.shift();
    if (next === undefined) {
      if (this.#active > 0) this.#active--;
      return;
    }
    if (next.timer !== undefined) clearTimeout(next.timer);
    next.resolve(undefined);
  }

  expire(waiter: Waiter): void {
    const i = this.#queue.indexOf(waiter);
    if (i < 0) return;
    this.#queue.splice(i, 1);
    waiter.resolve(
      new GatewayError('UPSTREAM_OVERLOADED', `upstream ${this.#upstream}: no slot within the queue timeout`),
    );
  }

  /** Refuse every waiter (the cluster is being destroyed). */
  rejectAll(error: GatewayError): void {
    for (const w of this.#queue.splice(0)) {
      if (w.timer !== undefined) clearTimeout(w.timer);
      w.resolve(error);
    }
  }
}
