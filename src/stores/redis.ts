/**
 * The one Redis connection Peregrine's subsystems share (the registry store; rate limiting), with
 * its health and metrics. Built for a gateway that must never wait on Redis:
 *
 * - `enableOfflineQueue: false`: a command sent while disconnected fails at once instead of
 *   queueing behind a reconnect; callers fall back (last-known-good, a local limiter, ...).
 * - every command has a deadline (`commandTimeout`); commands in flight when the connection drops
 *   fail rather than being replayed later.
 * - reconnection never gives up: exponential backoff with jitter between `reconnect.initialDelay`
 *   and `reconnect.maxDelay`.
 * - state changes and errors are metrics (`peregrine_redis_*`) and log lines (one per transition,
 *   not one per failed retry).
 *
 * Pub/sub needs a connection of its own (RESP2 servers refuse other commands on a subscribed
 * connection): `subscriber()` makes one on first use, with the same settings, health and metrics
 * under `connection="subscriber"`.
 *
 * Rate limits have one too, `rateLimits()` (`connection="ratelimits"`), on every counted request's
 * path: without ioredis's `commandTimeout`, which costs each command a timer of its own (a Timeout,
 * a closure and a property deleted off the command when it settles) and kept the rest of the
 * command's garbage alive into old space (docs/decisions.md, "A Redis connection for rate
 * limits"). Its users bound each call themselves (the policies' deadline queue); what the
 * per-command timer also did, failing commands a silent Redis never answers, is `stalled()`: a
 * connection whose calls go unanswered for `commandTimeout` is cut and reconnected, which fails
 * the commands it holds.
 *
 * Users of every connection prefix their keys themselves (`ownKeyPrefix`): ioredis's `keyPrefix`
 * looks each command's keys up in its command table (a lower-cased name, two closures and two
 * arrays per command) to find what to prefix, where a user that built its key knows. On the
 * registry's renewal batches that was about 1,800 instructions a renewal (docs/decisions.md,
 * "Renewal batches: one argument, one reply string, keys prefixed once").
 */
import type { Redis, RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import { lazyRequire } from '../lazy-require.ts';
import type { RedisConnectionName, RedisErrorKind, RedisMetrics, RedisState } from '../telemetry/metrics.ts';
import type { RedisConnectOptions } from './redis-connect-options.ts';
import { explainRedisTlsError } from './redis-tls-errors.ts';
import type { RedisConfig } from './schema.ts';

export type { RedisState } from '../telemetry/metrics.ts';

/** ioredis, loaded when the first connection is made (about 2.5 MB of live heap). */
const loadIoredis = lazyRequire<typeof import('ioredis')>('ioredis');

export interface RedisHealth {
  readonly connection: RedisConnectionName;
  readonly state: RedisState;
  /** When the connection entered its current state (ISO 8601). */
  readonly since: string;
  readonly reconnects: number;
  /** The last error's message (never a command's arguments), or null. */
  readonly lastError: { readonly message: string; readonly at: string } | null;
}

export interface RedisDeps {
  readonly logger: Logger;
  readonly metrics: RedisMetrics;
  /** What to AUTH with and which CAs to trust (readRedisConnectOptions). */
  readonly connect?: RedisConnectOptions;
}

/** The delay before reconnection attempt `times` (1-based): doubling, capped, with up to 50% jitter off. */
export function reconnectDelay(
  times: number,
  initialMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const base = Math.min(maxMs, initialMs * 2 ** Math.min(30, Math.max(0, times - 1)));
  return Math.max(1, Math.round(base * (0.5 + random() / 2)));
}

/** Classify a failed command: no reply in time, no usable connection, or an error reply. */
export function redisErrorKind(err: unknown): RedisErrorKind {
  const message = err instanceof Error ? err.message : String(err);
  if (/timed out/i.test(message)) return 'timeout';
  if (
    /enableOfflineQueue|Connection is closed|Stream isn't writeable|ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|MaxRetriesPerRequest|connect/i.test(
      message,
    )
  )
    return 'connection';
  return 'command';
}

export class RedisConnection {
  readonly config: RedisConfig;
  readonly name: RedisConnectionName;
  /** The ioredis client. Commands fail fast while disconnected; see the module comment. */
  readonly client: Redis;
  /** What users put before their keys themselves (`keyPrefix`: the client adds nothing). */
  readonly ownKeyPrefix: string;
  readonly #deps: RedisDeps;
  #state: RedisState = 'connecting';
  #since = new Date();
  #reconnects = 0;
  #lastError: { message: string; at: string } | null = null;
  #readyListeners = new Set<() => void>();
  #subscriber: RedisConnection | undefined;
  #rateLimits: RedisConnection | undefined;
  /** performance.now() of the last answer users reported (rate limits), and of the last cut. */
  #answeredAt = performance.now();
  #cutAt = Number.NEGATIVE_INFINITY;
  #closing: Promise<void> | undefined;
  /** Set once the connection has been ready: later 'error's are outages, logged once per outage. */
  #wasReady = false;
  #outageLogged = false;
  /** `rediss://`: errors are explained (redis-tls-errors.ts); set between the handshake and 'ready'. */
  readonly #tls: boolean;
  #handshakeDone = false;

  constructor(config: RedisConfig, deps: RedisDeps, name: RedisConnectionName = 'commands') {
    this.config = config;
    this.name = name;
    this.#deps = deps;
    const { initialDelay, maxDelay } = config.reconnect;
    this.ownKeyPrefix = config.keyPrefix;
    this.#tls = config.url.startsWith('rediss://');
    const options: RedisOptions = {
      ...deps.connect,
      connectTimeout: config.connectTimeout,
      ...(name === 'ratelimits' ? {} : { commandTimeout: config.commandTimeout }),
      connectionName: `${config.connectionName}${NAME_SUFFIX[name]}`,
      enableOfflineQueue: false,
      // A command caught by a disconnect fails at the first reconnection attempt, never replayed later.
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      // The subscriber's owner resubscribes itself on 'ready', so it knows when the subscription is live.
      autoResubscribe: false,
      lazyConnect: true,
      retryStrategy: (times) => reconnectDelay(times, initialDelay, maxDelay),
    };
    this.client = new (loadIoredis().Redis)(config.url, options);
    deps.metrics.addConnection(name);
    this.client.on('ready', this.#onReady);
    if (this.#tls) this.client.on('connect', this.#onHandshake);
    this.client.on('error', this.#onError);
    this.client.on('reconnecting', this.#onReconnecting);
    this.client.on('end', this.#onEnd);
    // Connection failures are reported through 'error' and retried by the strategy above.
    this.client.connect().catch(() => undefined);
  }

  get state(): RedisState {
    return this.#state;
  }

  get ready(): boolean {
    return this.#state === 'ready';
  }

  health(): RedisHealth {
    return {
      connection: this.name,
      state: this.#state,
      since: this.#since.toISOString(),
      reconnects: this.#reconnects,
      lastError: this.#lastError,
    };
  }

  /**
   * Call `listener` every time the connection becomes ready (the first time and after each
   * reconnect: whoever caches Redis state re-reads it then). Returns the unsubscribe function.
   */
  onReady(listener: () => void): () => void {
    this.#readyListeners.add(listener);
    return () => this.#readyListeners.delete(listener);
  }

  /** The pub/sub connection, made on first use and closed with this one. */
  subscriber(): RedisConnection {
    if (this.name !== 'commands') throw new Error(`a ${this.name} connection has no subscriber of its own`);
    if (this.#closing) throw new Error('Redis connection closed');
    this.#subscriber ??= new RedisConnection(this.config, this.#deps, 'subscriber');
    return this.#subscriber;
  }

  /** The rate limits' connection (see the module comment), made on first use and closed with this one. */
  rateLimits(): RedisConnection {
    if (this.name !== 'commands') throw new Error(`a ${this.name} connection has no rate limit connection`);
    if (this.#closing) throw new Error('Redis connection closed');
    this.#rateLimits ??= new RedisConnection(this.config, this.#deps, 'ratelimits');
    return this.#rateLimits;
  }

  /** The rate limits' connection's health once it exists, else this one's (for the admin API). */
  rateLimitHealth(): RedisHealth {
    return (this.#rateLimits ?? this).health();
  }

  /** A user's command was answered (an error reply included) at `now` (performance.now()). */
  answered(now: number): void {
    this.#answeredAt = now;
  }

  /**
   * A user's call went unanswered past its own deadline. When nothing has been answered for
   * `commandTimeout` (and the connection was not cut as recently), the connection is taken for
   * stalled: its socket is destroyed, which fails every command it holds, and ioredis reconnects.
   */
  stalled(now: number): void {
    const bound = this.config.commandTimeout;
    if (now - this.#answeredAt < bound || now - this.#cutAt < bound) return;
    this.#cutAt = now;
    this.#answeredAt = now;
    if (this.client.status !== 'ready') return;
    this.#deps.logger.warn(
      { connection: this.name, url: redactedUrl(this.config.url), silentMs: bound },
      'Redis answered nothing in time; cutting the connection and reconnecting',
    );
    this.recordCommandError(new Error(`timed out: nothing answered within ${bound} ms; connection cut`));
    this.client.stream.destroy();
  }

  /**
   * Count a failed command (users call this from their catch) and return its kind, so they can log
   * or count it their own way too.
   */
  recordCommandError(err: unknown): RedisErrorKind {
    const kind = redisErrorKind(err);
    this.#lastError = {
      message: err instanceof Error ? err.message : String(err),
      at: new Date().toISOString(),
    };
    this.#deps.metrics.recordError(this.name, kind);
    return kind;
  }

  #setState(state: RedisState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.#since = new Date();
    this.#deps.metrics.setState(this.name, state);
  }

  #onHandshake = (): void => {
    this.#handshakeDone = true;
  };

  #onReady = (): void => {
    this.#handshakeDone = false;
    const recovered = this.#wasReady || this.#reconnects > 0;
    this.#wasReady = true;
    this.#outageLogged = false;
    this.#setState('ready');
    this.#deps.logger.info(
      { connection: this.name, url: redactedUrl(this.config.url), recovered },
      recovered ? 'Redis connection restored' : 'Redis connection ready',
    );
    for (const listener of this.#readyListeners) {
      try {
        listener();
      } catch (err) {
        this.#deps.logger.error({ err, connection: this.name }, 'Redis ready listener failed');
      }
    }
  };

  #onError = (err: Error): void => {
    const explained = this.#tls
      ? explainRedisTlsError(err, {
          afterHandshake: this.#handshakeDone,
          clientCertificate: this.#deps.connect?.tls?.cert !== undefined,
        })
      : undefined;
    const message = explained ?? err.message;
    this.#lastError = { message, at: new Date().toISOString() };
    this.#deps.metrics.recordError(this.name, 'connection');
    if (!this.#outageLogged) {
      this.#outageLogged = true;
      this.#deps.logger.warn(
        {
          connection: this.name,
          url: redactedUrl(this.config.url),
          error: message,
          ...(explained === undefined ? {} : { cause: err.message }),
        },
        this.#wasReady ? 'Redis connection lost; reconnecting' : 'cannot connect to Redis; retrying',
      );
    }
  };

  #onReconnecting = (): void => {
    this.#handshakeDone = false;
    this.#reconnects++;
    this.#deps.metrics.recordReconnect(this.name);
    this.#setState('reconnecting');
  };

  #onEnd = (): void => {
    this.#setState('closed');
  };

  /**
   * Close this connection and its subscriber: QUIT (pending replies arrive first), cut after
   * `commandTimeout` if Redis does not answer. Safe to call twice.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#readyListeners.clear();
    await Promise.all([this.#subscriber?.close(), this.#rateLimits?.close(), this.#quit()]);
    this.#setState('closed');
  }

  async #quit(): Promise<void> {
    const client = this.client;
    if (client.status === 'end') return;
    if (client.status !== 'ready') {
      client.disconnect(false);
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        client.quit(),
        new Promise((resolve) => {
          timer = setTimeout(resolve, this.config.commandTimeout);
        }),
      ]);
    } catch {
      // Closing anyway.
    } finally {
      clearTimeout(timer);
      client.disconnect(false);
    }
  }
}

/** What `CLIENT SETNAME` appends to `connectionName` for each connection. */
const NAME_SUFFIX: Readonly<Record<RedisConnectionName, string>> = {
  commands: '',
  subscriber: '-sub',
  ratelimits: '-rl',
};

/** Where the connection goes, for logs: scheme, host, port and database, never the credentials. */
function redactedUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(unparsable url)';
  }
}
