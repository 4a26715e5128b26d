/**
 * Load a config file (read, parse, interpolate, validate) in a child process, so a reload never
 * stops the event loop that serves requests: YAML parsing and schema validation of 10,000 routes
 * take about a second of CPU in one piece. A process rather than a worker thread because its
 * memory goes back to the system when it exits: a worker's heap (200 MB while it parses 10,000
 * routes) stays in the gateway's resident set after the worker ends. The child runs below normal
 * priority, so on a busy core it waits for the event loop rather than the other way round.
 *
 * The validated config comes back through the IPC channel (V8 serialisation: about 15 ms to read
 * at 10,000 routes, so the routes come in batches, each read in a turn of its own) with its
 * fingerprint, which tells the store whether anything dynamic changed without a deep comparison
 * on the event loop.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants, setPriority } from 'node:os';
import { ConfigError, type ConfigIssue } from './loader.ts';
import { type Config, type DynamicConfig, dynamicPart } from './schema.ts';

export interface LoadedConfig {
  readonly config: Config;
  /** fingerprintOf(config). */
  readonly fingerprint: string;
}

/**
 * What the child sends back (load-child.ts): the routes of a valid config in batches, then the
 * rest of it. Each message is read on the event loop in one piece; batches keep every piece
 * small (a few ms) however many routes there are.
 */
export type LoadMessage =
  | { readonly kind: 'routes'; readonly routes: Config['routes'] }
  | { readonly kind: 'loaded'; readonly config: Config; readonly fingerprint: string }
  | { readonly kind: 'invalid'; readonly issues: ConfigIssue[] };

/** Routes per batch message: about 200 KB, read in about 2 ms. */
export const ROUTES_PER_MESSAGE = 1000;

/** What the child is asked (load-child.ts). */
export interface LoadRequest {
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

/** Bytes of the child's stderr kept for the failure message when it dies. */
const STDERR_TAIL = 2048;

/**
 * loadConfigFile in a child process. Rejects with ConfigError for an invalid or unreadable file,
 * and with a ConfigError too when the child itself fails (out of memory on a huge file), so the
 * caller reports one kind of failure. `signal` stops the child (shutdown during a reload).
 */
export function loadConfigApart(
  file: string,
  env: NodeJS.ProcessEnv,
  signal?: AbortSignal,
): Promise<LoadedConfig> {
  return new Promise((resolve, reject) => {
    const failed = (message: string): ConfigError =>
      new ConfigError([{ file, path: '', message: `cannot load the config: ${message}` }]);
    if (signal?.aborted) return reject(failed('the gateway is shutting down'));
    let child: ChildProcess;
    try {
      child = fork(new URL('./load-child.ts', import.meta.url), [], {
        // Not the gateway's own Node flags (an inspector port, a test runner's loaders).
        execArgv: [],
        serialization: 'advanced',
        stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      });
    } catch (err) {
      return reject(failed((err as Error).message));
    }
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString('utf8')).slice(-STDERR_TAIL);
    });
    lowerPriority(child);
    let settled = false;
    const settle = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      fn();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
    function onAbort(): void {
      settle(() => reject(failed('the gateway is shutting down')));
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    const routes: Config['routes'][number][] = [];
    child.on('message', (msg: LoadMessage) => {
      if (msg.kind === 'routes') {
        for (const r of msg.routes) routes.push(r);
        return;
      }
      settle(() =>
        msg.kind === 'loaded'
          ? resolve({ config: { ...msg.config, routes }, fingerprint: msg.fingerprint })
          : reject(new ConfigError(msg.issues)),
      );
    });
    child.once('error', (err) => settle(() => reject(failed(err.message))));
    child.once('exit', (code, sig) =>
      settle(() => reject(failed(`the loader exited (${sig ?? code})${stderr ? `: ${stderr.trim()}` : ''}`))),
    );
    const request: LoadRequest = { file, env: { ...env } };
    child.send(request);
  });
}

function lowerPriority(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    setPriority(child.pid, constants.priority.PRIORITY_BELOW_NORMAL);
  } catch {
    // not permitted here: the child runs at the gateway's priority
  }
}
