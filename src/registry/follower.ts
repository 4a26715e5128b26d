/**
 * A view of a registry that runs elsewhere, kept through its watch API (`GET /v1/watch`,
 * server-sent events): a `snapshot` of the instances, then one `change` per change. It answers
 * the reads of a RegistryReader from memory, like the stores do, so the registry endpoint provider
 * follows it the same way; a sidecar uses it to learn where its destinations' sidecars are.
 *
 * Last-known-good: a stream that breaks (the registry restarts, the network fails, nothing arrives
 * for `idleTimeoutMs`) leaves the view as it was and reports itself out of sync until a new stream
 * has delivered its snapshot, which replaces the view whole; it reconnects with a doubling backoff.
 *
 * undici's EventSource is not used: it cannot send the bearer token a registry credential may be.
 */
import type { Logger } from 'pino';
import { type Dispatcher, request } from 'undici';
import type { Instance, InstanceChange, RegistryReader, StoreHealth, WatchListener } from './store.ts';
import { RegistryView } from './view.ts';

export interface RegistryFollowerOptions {
  /** Base URL of the registration API. */
  readonly url: string;
  /** The services to follow at first (none: every service); follow() adds more. */
  readonly services: readonly string[];
  readonly dispatcher: Dispatcher;
  /** Sent with the request, e.g. `authorization`. */
  readonly headers?: Readonly<Record<string, string>>;
  readonly logger: Logger;
  /** A stream silent this long is taken for dead (the registry sends a comment every 15 s). Default 45 s. */
  readonly idleTimeoutMs?: number;
  /** Reconnection delays: doubling from `initialMs` to `maxMs` (default 250 ms, 5 s). */
  readonly backoff?: { readonly initialMs?: number; readonly maxMs?: number };
}

/** Instance JSON as the registration API writes it (api.ts instanceJson). */
interface InstanceJson extends Omit<Instance, 'expiresAt' | 'lastHeartbeat' | 'registeredAt'> {
  readonly expiresAt: string;
  readonly lastHeartbeat: string;
  readonly registeredAt: string;
}

function instanceOf(j: InstanceJson): Instance {
  return {
    ...j,
    expiresAt: Date.parse(j.expiresAt),
    lastHeartbeat: Date.parse(j.lastHeartbeat),
    registeredAt: Date.parse(j.registeredAt),
  };
}

/** Server-sent events from text chunks: `onEvent(type, data)` per complete event. */
export class EventStreamParser {
  #buffer = '';
  #cr = false;
  readonly #onEvent: (type: string, data: string) => void;

  constructor(onEvent: (type: string, data: string) => void) {
    this.#onEvent = onEvent;
  }

  push(chunk: string): void {
    // A CR at the end of a chunk may be the first half of a CRLF: held until the next one.
    let text = this.#cr ? `\r${chunk}` : chunk;
    this.#cr = text.endsWith('\r');
    if (this.#cr) text = text.slice(0, -1);
    this.#buffer += text.includes('\r') ? text.replace(/\r\n?/g, '\n') : text;
    let end = this.#buffer.indexOf('\n\n');
    while (end >= 0) {
      const block = this.#buffer.slice(0, end);
      this.#buffer = this.#buffer.slice(end + 2);
      this.#dispatch(block);
      end = this.#buffer.indexOf('\n\n');
    }
  }

  #dispatch(block: string): void {
    let type = 'message';
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + (line[colon + 1] === ' ' ? 2 : 1));
      if (field === 'event') type = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length > 0) this.#onEvent(type, data.join('\n'));
  }
}

export class RegistryFollower implements RegistryReader {
  readonly #opts: RegistryFollowerOptions;
  readonly #view: RegistryView;
  readonly #services: Set<string>;
  #url: string;
  readonly #closing = new AbortController();
  /** Aborts the current stream (to reopen it for more services, or at close). */
  #stream: AbortController | undefined;
  #reopen = false;
  #synced = false;
  #lastSync: string | null = null;
  #lastError: { message: string; at: string } | null = null;
  #failures = 0;
  #timer: NodeJS.Timeout | undefined;
  #firstSync: { promise: Promise<void>; resolve: () => void };
  #running: Promise<void> | undefined;

  constructor(opts: RegistryFollowerOptions) {
    this.#opts = opts;
    this.#view = new RegistryView((err) => opts.logger.error({ err }, 'registry watcher failed'));
    this.#services = new Set(opts.services);
    this.#url = this.#watchUrl();
    let resolve!: () => void;
    const promise = new Promise<void>((r) => {
      resolve = r;
    });
    this.#firstSync = { promise, resolve };
  }

  /** Open the stream (and keep reopening it until close()). */
  start(): void {
    if (this.#running === undefined && !this.#closing.signal.aborted) this.#connect();
  }

  #watchUrl(): string {
    const url = new URL('/v1/watch', this.#opts.url);
    for (const s of this.#services) url.searchParams.append('service', s);
    return url.href;
  }

  /**
   * Follow `service` too (a reload added a destination): the stream is reopened for the larger
   * set, and its snapshot brings the service's instances. Nothing changes when it is followed
   * already, or when the follower follows every service.
   */
  follow(service: string): void {
    if (this.#services.size === 0 || this.#services.has(service)) return;
    this.#services.add(service);
    this.#url = this.#watchUrl();
    if (this.#running === undefined) return;
    this.#reopen = true;
    this.#stream?.abort();
  }

  list(service: string): readonly Instance[] {
    return this.#view.list(service);
  }

  watch(service: string, listener: WatchListener): () => void {
    return this.#view.watch(service, listener);
  }

  synced(): Promise<void> {
    return this.#firstSync.promise;
  }

  health(): StoreHealth {
    return { store: 'remote', synced: this.#synced, lastSync: this.#lastSync, lastError: this.#lastError };
  }

  #connect(): void {
    this.#running = this.#follow().then(
      () => this.#lost(new Error('the registry ended the watch stream')),
      (err: unknown) => this.#lost(err),
    );
  }

  async #follow(): Promise<void> {
    const idle = this.#opts.idleTimeoutMs ?? 45_000;
    const stream = new AbortController();
    this.#stream = stream;
    const res = await request(this.#url, {
      method: 'GET',
      headers: { accept: 'text/event-stream', ...this.#opts.headers },
      dispatcher: this.#opts.dispatcher,
      signal: AbortSignal.any([this.#closing.signal, stream.signal]),
      headersTimeout: idle,
      bodyTimeout: idle,
    });
    if (res.statusCode !== 200) {
      const body = await res.body.text().catch(() => '');
      throw new Error(`the registry answered ${res.statusCode} to a watch: ${body.slice(0, 300)}`);
    }
    const parser = new EventStreamParser((type, data) => this.#event(type, data));
    res.body.setEncoding('utf8');
    for await (const chunk of res.body) parser.push(chunk as string);
  }

  #event(type: string, data: string): void {
    if (type === 'snapshot') {
      const { instances } = JSON.parse(data) as { instances: InstanceJson[] };
      const changed = this.#view.replaceAll(instances.map(instanceOf));
      const wasSynced = this.#synced;
      this.#synced = true;
      this.#failures = 0;
      this.#lastSync = new Date().toISOString();
      this.#firstSync.resolve();
      if (!wasSynced)
        this.#opts.logger.info({ instances: instances.length, changed }, 'following the registry');
      return;
    }
    if (type !== 'change' || !this.#synced) return;
    const change = JSON.parse(data) as {
      type: InstanceChange['type'];
      cause: InstanceChange['cause'];
      instance: InstanceJson;
    };
    const instance = instanceOf(change.instance);
    if (change.type === 'upsert') this.#view.upsert(instance, change.cause);
    else this.#view.remove(instance.service, instance.id, change.cause);
  }

  #lost(err: unknown): void {
    this.#running = undefined;
    this.#stream = undefined;
    if (this.#closing.signal.aborted) return;
    if (this.#reopen) {
      // Reopened on purpose: the view stays in sync meanwhile, bar the service just added.
      this.#reopen = false;
      this.#connect();
      return;
    }
    const message = err instanceof Error ? err.message : String(err);
    const wasSynced = this.#synced;
    this.#synced = false;
    this.#lastError = { message, at: new Date().toISOString() };
    this.#failures++;
    // Once per outage at warn; the retries at debug.
    if (wasSynced || this.#failures === 1)
      this.#opts.logger.warn({ err: message }, 'registry watch lost; keeping the last known instances');
    else this.#opts.logger.debug({ err: message, failures: this.#failures }, 'registry watch failed again');
    const initial = this.#opts.backoff?.initialMs ?? 250;
    const max = this.#opts.backoff?.maxMs ?? 5000;
    const delay = Math.min(max, initial * 2 ** Math.min(20, this.#failures - 1));
    this.#timer = setTimeout(() => this.#connect(), delay * (0.5 + Math.random() / 2));
    this.#timer.unref();
  }

  /** Stop following; the view stays readable. Safe to call twice. */
  async close(): Promise<void> {
    this.#closing.abort();
    clearTimeout(this.#timer);
    await this.#running;
  }
}
