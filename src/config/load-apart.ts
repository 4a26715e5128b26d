/**
 * Load a config file (read, parse, interpolate, validate) in a child process, so a reload never
 * stops the event loop that serves requests: YAML parsing and schema validation of 10,000 routes
 * take about a second of CPU in one piece. A process rather than a worker thread because its
 * memory can go back to the system: a worker's heap (200 MB while it parses 10,000 routes) stays
 * in the gateway's resident set. The child runs below normal priority, so on a busy core it waits
 * for the event loop rather than the other way round.
 *
 * The child stays up for a while after a load (ConfigLoader): starting Node and compiling the
 * loader, the schema and the YAML parser costs about 0.4 s of CPU and a parser the JIT has
 * compiled parses faster, so in a series of reloads (a deployment tool, a file edited several
 * times) each after the first costs about half the CPU. It holds about 200 MB resident at 10,000
 * routes (its heap does not shrink at once) and exits LOADER_KEEP_MS after the last load, so an
 * idle gateway holds nothing for reloads.
 *
 * The validated config comes back through the IPC channel with its fingerprint, which tells the
 * store whether anything dynamic changed without a deep comparison on the event loop. The routes
 * come as JSON text, one string each, in batches: a route whose text is the previous load's is
 * the previous load's object (parsed only once), so the compile can tell unchanged routes by
 * identity and keep what it built for them, and reading a batch costs the event loop a copy of
 * its strings rather than the structured clone of 1,000 objects.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { createHash } from 'node:crypto';
import type { Socket } from 'node:net';
import { constants, setPriority } from 'node:os';
import { ConfigError, type ConfigIssue } from './loader.ts';
import { type Config, type DynamicConfig, dynamicPart } from './schema.ts';

export interface LoadedConfig {
  readonly config: Config;
  /** fingerprintOf(config). */
  readonly fingerprint: string;
}

type RouteConfig = Config['routes'][number];

/**
 * What the child sends back (load-child.ts) for the request `id`: the routes of a valid config
 * as JSON text in batches, then the rest of it. Each message is read on the event loop in one
 * piece; batches keep every piece small however many routes there are.
 */
export type LoadMessage =
  | { readonly id: number; readonly kind: 'routes'; readonly routes: readonly string[] }
  | { readonly id: number; readonly kind: 'loaded'; readonly config: Config; readonly fingerprint: string }
  | { readonly id: number; readonly kind: 'invalid'; readonly issues: ConfigIssue[] };

/** Routes per batch message: about 110 KB of text. */
export const ROUTES_PER_MESSAGE = 1000;

/** What the child is asked (load-child.ts). */
export interface LoadRequest {
  readonly id: number;
  readonly file: string;
  readonly env: NodeJS.ProcessEnv;
}

/**
 * Equal for equal dynamic configs (as the loader produces them: same keys in the same order), so
 * comparing two is comparing two short strings.
 */
export function configFingerprint(dynamic: DynamicConfig): string {
  return createHash('sha256').update(JSON.stringify(dynamic)).digest('base64');
}

/** The fingerprint of a loaded config's dynamic part. */
export function fingerprintOf(config: Config): string {
  return configFingerprint(dynamicPart(config));
}

/** A route as the child sends it: what tells an unchanged route from a changed one. */
export function routeText(route: RouteConfig): string {
  return JSON.stringify(route);
}

/** How long the child waits for another load before it is stopped. */
export const LOADER_KEEP_MS = 30_000;

/** Bytes of the child's stderr kept for the failure message when it dies. */
const STDERR_TAIL = 2048;

/** A load in progress. */
interface Pending {
  readonly id: number;
  readonly file: string;
  readonly child: ChildProcess;
  readonly routes: RouteConfig[];
  readonly texts: Map<string, RouteConfig>;
  resolve(loaded: LoadedConfig): void;
  reject(err: ConfigError): void;
}

/**
 * Loads config files in a child process that it keeps between loads (one load at a time: the
 * caller serialises them). Rejects with ConfigError for an invalid or unreadable file, and with a
 * ConfigError too when the child itself fails (out of memory on a huge file), so the caller
 * reports one kind of failure; a child that failed or was stopped is replaced at the next load.
 * Unchanged routes keep the object of the previous load (see remember()).
 */
export class ConfigLoader {
  #child: ChildProcess | undefined;
  #stderr = '';
  #nextId = 1;
  #pending: Pending | undefined;
  /** The routes of the last config loaded or remembered, by their text. */
  #routes = new Map<string, RouteConfig>();
  #closed = false;
  /** Stops the idle child. */
  #keepTimer: NodeJS.Timeout | undefined;
  readonly #keepMs: number;

  constructor(opts: { keepMs?: number } = {}) {
    this.#keepMs = opts.keepMs ?? LOADER_KEEP_MS;
  }

  /**
   * The config now in use: a load whose route has the same text as one of its routes gives back
   * that route's object.
   */
  remember(config: Config): void {
    const texts = new Map<string, RouteConfig>();
    for (const r of config.routes) texts.set(routeText(r), r);
    this.#routes = texts;
  }

  /** The child's process id while it runs (tests). */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  load(file: string, env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<LoadedConfig> {
    const failed = (message: string): ConfigError => loadFailed(file, message);
    if (this.#closed || signal?.aborted) return Promise.reject(failed('the gateway is shutting down'));
    if (this.#pending) return Promise.reject(failed('another load is in progress'));
    clearTimeout(this.#keepTimer);
    let child: ChildProcess;
    try {
      child = this.#spawn();
    } catch (err) {
      return Promise.reject(failed((err as Error).message));
    }
    return new Promise<LoadedConfig>((resolve, reject) => {
      const onAbort = (): void => {
        this.#stop(child);
        this.#settle(() => reject(failed('the gateway is shutting down')));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const id = this.#nextId++;
      const done = (): void => {
        signal?.removeEventListener('abort', onAbort);
        child.unref();
        child.channel?.unref();
        clearTimeout(this.#keepTimer);
        this.#keepTimer = setTimeout(() => this.#stop(child), this.#keepMs);
        this.#keepTimer.unref();
      };
      this.#pending = {
        id,
        file,
        child,
        routes: [],
        texts: new Map(),
        resolve: (loaded) => {
          done();
          resolve(loaded);
        },
        reject: (err) => {
          done();
          reject(err);
        },
      };
      // While a load is pending the channel keeps the process up; between loads it does not.
      child.ref();
      child.channel?.ref();
      const request: LoadRequest = { id, file, env: { ...env } };
      child.send(request, (err) => {
        if (err) this.#settle((p) => p.reject(failed(err.message)));
      });
    });
  }

  /** Stop the child (a load in progress is rejected). Idempotent. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#keepTimer);
    const child = this.#child;
    if (child) this.#stop(child);
    this.#settle((p) => p.reject(loadFailed(p.file, 'the gateway is shutting down')));
  }

  #settle(fn: (pending: Pending) => void): void {
    const pending = this.#pending;
    if (!pending) return;
    this.#pending = undefined;
    fn(pending);
  }

  #stop(child: ChildProcess): void {
    if (this.#child === child) this.#child = undefined;
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }

  #spawn(): ChildProcess {
    if (this.#child) return this.#child;
    const child = fork(new URL('./load-child.ts', import.meta.url), [], {
      // Not the gateway's own Node flags (an inspector port, a test runner's loaders). gc() to
      // drop a load's garbage before waiting for the next one; a young generation of 4 MB
      // rather than V8's default 16-32 MB: the same CPU, 200 MB resident at 10,000 routes
      // rather than 330 MB.
      execArgv: ['--expose-gc', '--max-semi-space-size=4'],
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    this.#child = child;
    this.#stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      if (this.#child === child) this.#stderr = (this.#stderr + chunk.toString('utf8')).slice(-STDERR_TAIL);
    });
    (child.stderr as Socket | null)?.unref();
    lowerPriority(child);
    child.on('message', (msg: LoadMessage) => this.#receive(child, msg));
    const gone = (why: string): void => {
      const stderr = this.#child === child ? this.#stderr.trim() : '';
      if (this.#child === child) this.#child = undefined;
      const pending = this.#pending;
      if (pending?.child !== child) return;
      this.#settle((p) => p.reject(loadFailed(p.file, `${why}${stderr ? `: ${stderr}` : ''}`)));
    };
    child.once('error', (err) => gone(err.message));
    child.once('exit', (code, sig) => gone(`the loader exited (${sig ?? code})`));
    child.unref();
    child.channel?.unref();
    return child;
  }

  #receive(child: ChildProcess, msg: LoadMessage): void {
    const pending = this.#pending;
    if (pending === undefined || pending.child !== child || msg.id !== pending.id) return;
    if (msg.kind === 'routes') {
      const previous = this.#routes;
      for (const text of msg.routes) {
        const route = previous.get(text) ?? (JSON.parse(text) as RouteConfig);
        pending.routes.push(route);
        pending.texts.set(text, route);
      }
      return;
    }
    this.#settle((p) => {
      if (msg.kind === 'invalid') return p.reject(new ConfigError(msg.issues));
      this.#routes = p.texts;
      p.resolve({ config: { ...msg.config, routes: p.routes }, fingerprint: msg.fingerprint });
    });
  }
}

/** One load in a child process of its own, stopped after it (`peregrine` keeps a ConfigLoader). */
export async function loadConfigApart(
  file: string,
  env: NodeJS.ProcessEnv,
  signal?: AbortSignal,
): Promise<LoadedConfig> {
  const loader = new ConfigLoader();
  try {
    return await loader.load(file, env, signal);
  } finally {
    loader.close();
  }
}

function loadFailed(file: string, message: string): ConfigError {
  return new ConfigError([{ file, path: '', message: `cannot load the config: ${message}` }]);
}

function lowerPriority(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    setPriority(child.pid, constants.priority.PRIORITY_BELOW_NORMAL);
  } catch {
    // not permitted here: the child runs at the gateway's priority
  }
}
