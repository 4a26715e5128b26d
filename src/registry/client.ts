/**
 * The registration client for Node services (and the engine of `peregrine register`):
 *
 *   import { RegistrationClient } from 'peregrine/src/registry/client.ts';
 *   const registration = new RegistrationClient({
 *     registry: 'https://registry.internal:9902', service: 'payments', port: 8080,
 *     token: process.env.REGISTRY_TOKEN,              // or tls: { ca, cert, key } for mTLS
 *     handleSignals: true,                            // drain and deregister on SIGTERM/SIGINT
 *   });
 *   await registration.start();
 *
 * It registers, renews the lease at a fraction of its TTL (with jitter, so a fleet started together
 * does not renew together), registers again when a renewal answers 404 (the registry lost the
 * lease: restarted, or the lease expired while the service was unreachable), backs off on errors,
 * and on close (or SIGTERM with `handleSignals`) drains the instance, waits `drainDelay` for the
 * gateways to stop sending it new requests, then deregisters. docs/registry.md has the details.
 */
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { Agent, type Dispatcher, request } from 'undici';

export interface RegistrationClientOptions {
  /** Base URL of the registration API, e.g. `https://registry.internal:9902`. */
  readonly registry: string;
  readonly service: string;
  /** Instance id; default `<hostname>-<port>` (letters, digits, `. _ : -`). */
  readonly id?: string;
  readonly port: number;
  /** IP address to register; default: the address the registry sees the request come from. */
  readonly address?: string;
  readonly protocol?: 'http' | 'https';
  readonly zone?: string;
  readonly version?: string;
  readonly weight?: number;
  readonly metadata?: Readonly<Record<string, string>>;
  /** Lease TTL in milliseconds (the registry bounds it). Default 15 000. */
  readonly ttlMs?: number;
  /** Bearer token (from a secret: never put it on a command line). */
  readonly token?: string;
  /**
   * How to reach the registry, instead of an agent of the client's own built from `tls` (e.g. one
   * whose certificates follow rotation). The client never closes it.
   */
  readonly dispatcher?: Dispatcher;
  /** State to register in (default active); setState() changes it later. */
  readonly state?: 'active' | 'draining';
  /** TLS toward the registry: CA bundle, and a client certificate for mTLS. */
  readonly tls?: {
    readonly ca?: string | Buffer;
    readonly cert?: string | Buffer;
    readonly key?: string | Buffer;
  };
  /** Renew after this fraction of the TTL (default 1/3: two more tries before the lease ends). */
  readonly heartbeatFraction?: number;
  /** ± this fraction of the interval, at random (default 0.1). */
  readonly jitter?: number;
  /** Retry delays after a failure: doubling from `initialMs`, capped at `maxMs` (default 250 ms, 5 s). */
  readonly backoff?: { readonly initialMs?: number; readonly maxMs?: number };
  /** Between drain and deregistration on close (default 2 s): gateways stop sending new requests. */
  readonly drainDelayMs?: number;
  /** Per request (default 5 s). */
  readonly requestTimeoutMs?: number;
  /**
   * Drain and deregister on these signals (`true`: SIGTERM and SIGINT), then re-raise the signal
   * if nothing else listens for it, so the process ends as it would have.
   */
  readonly handleSignals?: boolean | readonly NodeJS.Signals[];
}

export type RegistrationState = 'idle' | 'registering' | 'registered' | 'closing' | 'closed';

/** What the registry answered (the instance as registered), as JSON. */
export interface RegisteredInstance {
  readonly service: string;
  readonly id: string;
  readonly address: string;
  readonly port: number;
  readonly state: 'active' | 'draining';
  readonly ttlMs: number;
  readonly expiresAt: string;
  readonly registeredVia: string;
  readonly [key: string]: unknown;
}

/** The registry refused the registration itself (400, 401, 403): retrying the same will not help. */
export class RegistrationRejectedError extends Error {
  readonly status: number;
  readonly code: string | undefined;
  constructor(status: number, code: string | undefined, detail: string | undefined) {
    super(`registry refused the registration: ${status} ${code ?? ''}${detail ? `: ${detail}` : ''}`.trim());
    this.name = 'RegistrationRejectedError';
    this.status = status;
    this.code = code;
  }
}

interface Answer {
  readonly status: number;
  readonly json: Record<string, unknown> | undefined;
  readonly retryAfterMs: number | undefined;
}

/** A default instance id: the host name and port, cut to the id syntax. */
export function defaultInstanceId(port: number, host: string = hostname()): string {
  const clean = host
    .replace(/[^A-Za-z0-9._:-]/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 100);
  return `${clean || 'instance'}-${port}`;
}

/**
 * Events: `registered` (instance; again after a re-registration), `reregistered` (a renewal
 * answered 404), `failure` (error; the client keeps retrying), `deregistered`.
 */
export class RegistrationClient extends EventEmitter {
  readonly service: string;
  readonly id: string;
  readonly #opts: RegistrationClientOptions;
  readonly #base: string;
  readonly #agent: Dispatcher;
  readonly #ownAgent: boolean;
  readonly #headers: Record<string, string>;
  /** A heartbeat's: it needs no instance back (204; a registry that ignores the preference answers 200). */
  readonly #heartbeatHeaders: Record<string, string>;
  readonly #spec: Record<string, unknown>;
  #body: string;
  #wanted: 'active' | 'draining';
  #state: RegistrationState = 'idle';
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #ttlMs: number;
  #inFlight: Promise<unknown> | undefined;
  #closing: Promise<void> | undefined;
  #started: { resolve: (i: RegisteredInstance) => void; reject: (e: Error) => void } | undefined;
  readonly #signals: NodeJS.Signals[];
  readonly #onSignal = (signal: NodeJS.Signals): void => {
    void this.close().finally(() => {
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  };

  constructor(opts: RegistrationClientOptions) {
    super();
    if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535)
      throw new Error('port must be 1-65535');
    this.#opts = opts;
    this.service = opts.service;
    this.id = opts.id ?? defaultInstanceId(opts.port);
    this.#ttlMs = opts.ttlMs ?? 15_000;
    const base = new URL(opts.registry);
    if (base.protocol !== 'http:' && base.protocol !== 'https:')
      throw new Error('registry must be an http(s) URL');
    this.#base = `${base.origin}/v1/services/${encodeURIComponent(opts.service)}/instances/${encodeURIComponent(this.id)}`;
    this.#ownAgent = opts.dispatcher === undefined;
    this.#agent =
      opts.dispatcher ??
      new Agent({
        connect: { ca: opts.tls?.ca, cert: opts.tls?.cert, key: opts.tls?.key },
        keepAliveTimeout: 30_000,
      });
    this.#headers = { 'content-type': 'application/json' };
    if (opts.token) this.#headers.authorization = `Bearer ${opts.token}`;
    this.#heartbeatHeaders = { ...this.#headers, prefer: 'return=minimal' };
    this.#spec = {
      address: opts.address,
      port: opts.port,
      protocol: opts.protocol,
      zone: opts.zone,
      version: opts.version,
      weight: opts.weight,
      metadata: opts.metadata,
      ttl: this.#ttlMs,
    };
    this.#wanted = opts.state ?? 'active';
    this.#body = this.#bodyFor(this.#wanted);
    const signals = opts.handleSignals;
    this.#signals = signals === true ? ['SIGTERM', 'SIGINT'] : signals ? [...signals] : [];
  }

  get state(): RegistrationState {
    return this.#state;
  }

  /** The state the instance is registered in (or will be). */
  get registeredState(): 'active' | 'draining' {
    return this.#wanted;
  }

  #bodyFor(state: 'active' | 'draining'): string {
    // Leaving `state` out registers as active, as before; a draining instance says so.
    return JSON.stringify(state === 'active' ? this.#spec : { ...this.#spec, state });
  }

  /**
   * Register in `state` from now on: draining (gateways send it no new requests, those in flight
   * finish) or active again. Registered already: sent at once (renewals keep it); otherwise the
   * registration in progress uses it.
   */
  setState(state: 'active' | 'draining'): void {
    if (state === this.#wanted) return;
    this.#wanted = state;
    this.#body = this.#bodyFor(state);
    if (this.#state === 'registered') this.#register();
  }

  /**
   * Register, then keep the lease. Resolves with the registered instance; rejects with
   * RegistrationRejectedError when the registry refuses the registration itself (bad input, no or
   * wrong credential). Unreachable registries are retried with backoff until they answer.
   */
  start(): Promise<RegisteredInstance> {
    if (this.#state !== 'idle') throw new Error(`already ${this.#state}`);
    for (const s of this.#signals) process.once(s, this.#onSignal);
    return new Promise<RegisteredInstance>((resolve, reject) => {
      this.#started = { resolve, reject };
      this.#register();
    });
  }

  #register(): void {
    this.#state = 'registering';
    this.#track(this.#call('PUT', '', this.#body)).then(
      (a) => {
        if (this.#state !== 'registering') return;
        if (a.status === 200 || a.status === 201) {
          const instance = a.json?.instance as RegisteredInstance;
          this.#ttlMs = instance.ttlMs;
          this.#state = 'registered';
          this.#failures = 0;
          this.emit('registered', instance);
          this.#started?.resolve(instance);
          this.#started = undefined;
          // setState() while this registration was in flight: it was sent with the state before.
          if (instance.state !== undefined && instance.state !== this.#wanted) this.#register();
          else this.#schedule(this.#heartbeatDelay(), () => this.#heartbeat());
          return;
        }
        const err = rejection(a);
        if (err !== undefined && this.#started) {
          this.#started.reject(err);
          this.#started = undefined;
          this.#stop();
          return;
        }
        this.#retry(
          () => this.#register(),
          err ?? new Error(`registry answered ${a.status}`),
          a.retryAfterMs,
        );
      },
      (err: Error) => this.#state === 'registering' && this.#retry(() => this.#register(), err, undefined),
    );
  }

  #heartbeat(): void {
    this.#track(this.#call('POST', '/heartbeat', undefined, this.#heartbeatHeaders)).then(
      (a) => {
        if (this.#state !== 'registered') return;
        if (a.status === 204 || a.status === 200) {
          this.#failures = 0;
          this.#schedule(this.#heartbeatDelay(), () => this.#heartbeat());
        } else if (a.status === 404) {
          // The registry does not know this lease (restarted, or it expired): register again now.
          this.emit('reregistered');
          this.#register();
        } else {
          this.#retry(
            () => this.#heartbeat(),
            rejection(a) ?? new Error(`registry answered ${a.status}`),
            a.retryAfterMs,
          );
        }
      },
      (err: Error) => this.#state === 'registered' && this.#retry(() => this.#heartbeat(), err, undefined),
    );
  }

  #heartbeatDelay(): number {
    const fraction = this.#opts.heartbeatFraction ?? 1 / 3;
    const jitter = this.#opts.jitter ?? 0.1;
    return Math.max(1, Math.round(this.#ttlMs * fraction * (1 + jitter * (2 * Math.random() - 1))));
  }

  /** Try again after a backoff (never longer than a heartbeat interval, so a lease can still be saved). */
  #retry(again: () => void, err: Error, retryAfterMs: number | undefined): void {
    this.#failures++;
    this.emit('failure', err);
    const initial = this.#opts.backoff?.initialMs ?? 250;
    const max = Math.min(this.#opts.backoff?.maxMs ?? 5000, this.#heartbeatDelay());
    const backoff = Math.min(max, initial * 2 ** Math.min(20, this.#failures - 1));
    const delay = Math.max(backoff * (0.5 + Math.random() / 2), retryAfterMs ?? 0);
    this.#schedule(delay, again);
  }

  #schedule(ms: number, fn: () => void): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(fn, ms);
    this.#timer.unref();
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#inFlight = p.catch(() => undefined);
    return p;
  }

  async #call(
    method: string,
    suffix: string,
    body?: string,
    headers: Record<string, string> = this.#headers,
  ): Promise<Answer> {
    const timeout = this.#opts.requestTimeoutMs ?? 5000;
    const res = await request(`${this.#base}${suffix}`, {
      method,
      headers,
      body,
      dispatcher: this.#agent,
      headersTimeout: timeout,
      bodyTimeout: timeout,
      signal: AbortSignal.timeout(timeout),
    });
    const text = await res.body.text();
    let json: Record<string, unknown> | undefined;
    try {
      json = text ? (JSON.parse(text) as Record<string, unknown>) : undefined;
    } catch {
      json = undefined;
    }
    const retryAfter = Number(res.headers['retry-after']);
    return {
      status: res.statusCode,
      json,
      retryAfterMs: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : undefined,
    };
  }

  #stop(): void {
    clearTimeout(this.#timer);
    for (const s of this.#signals) process.off(s, this.#onSignal);
  }

  /**
   * Drain (gateways stop sending new requests; those in flight finish), wait `drainDelay`, then
   * deregister, and stop. Errors are reported as `failure` events, never thrown: a lease that could
   * not be removed expires by itself. Safe to call twice.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const wasRegistered = this.#state === 'registered' || this.#state === 'registering';
    this.#state = 'closing';
    this.#stop();
    this.#started?.reject(new Error('closed before the registration completed'));
    this.#started = undefined;
    await this.#inFlight;
    if (wasRegistered) {
      try {
        const drained = await this.#call('POST', '/drain');
        if (drained.status === 200) await new Promise((r) => setTimeout(r, this.#opts.drainDelayMs ?? 2000));
        const removed = await this.#call('DELETE', '');
        if (removed.status === 204 || removed.status === 404) this.emit('deregistered');
        else
          this.emit('failure', rejection(removed) ?? new Error(`deregistration answered ${removed.status}`));
      } catch (err) {
        this.emit('failure', err as Error);
      }
    }
    this.#state = 'closed';
    if (this.#ownAgent) await this.#agent.close();
  }
}

/** A refusal retrying will not fix (400, 401, 403), or undefined. */
function rejection(a: Answer): RegistrationRejectedError | undefined {
  if (a.status !== 400 && a.status !== 401 && a.status !== 403) return undefined;
  return new RegistrationRejectedError(
    a.status,
    typeof a.json?.code === 'string' ? a.json.code : undefined,
    typeof a.json?.detail === 'string' ? a.json.detail : undefined,
  );
}
