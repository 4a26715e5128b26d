/**
 * Child processes of a bench run: spawned each in its own process group, remembered, and killed
 * (group and all, so nginx workers go too) when stopped, at exit, on error and on Ctrl-C.
 * Also free-port discovery and readiness polling.
 */
import { type ChildProcess, type StdioOptions, spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Where stdout goes: kept in the output tail ('pipe', default), dropped, or a file descriptor. */
  stdout?: 'pipe' | 'ignore' | number;
  /** Open an IPC channel: bench peers exit when it closes, i.e. when the bench dies. */
  ipc?: boolean;
}

const TAIL_BYTES = 8 * 1024;

export class Managed {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<ExitInfo>;
  /**
   * The process has exited and its stdout and stderr are read to their end. 'exit' can come
   * before the pipes' last data: output() read on `exited` alone can miss what the process
   * printed last (wrk prints its whole result as it exits).
   */
  readonly closed: Promise<ExitInfo>;
  exit: ExitInfo | undefined = undefined;
  #tail = '';

  constructor(name: string, command: string, args: readonly string[], opts: SpawnOptions = {}) {
    this.name = name;
    const stdio: StdioOptions = ['ignore', opts.stdout ?? 'pipe', 'pipe'];
    if (opts.ipc) stdio.push('ipc');
    // detached: a process group of its own, so a group kill reaches grandchildren (nginx workers).
    this.child = spawn(command, args, { stdio, env: opts.env ?? process.env, cwd: opts.cwd, detached: true });
    if (this.child.pid === undefined) {
      // spawn failures (ENOENT) are reported asynchronously; make them synchronous and clear.
      throw new Error(`${name}: could not start ${command}`);
    }
    this.pid = this.child.pid;
    const keep = (chunk: Buffer) => {
      this.#tail = (this.#tail + chunk.toString('utf8')).slice(-TAIL_BYTES);
    };
    this.child.stdout?.on('data', keep);
    this.child.stderr?.on('data', keep);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        live.delete(this);
        resolve(this.exit);
      });
    });
    this.closed = new Promise((resolve) => {
      this.child.once('close', (code, signal) => resolve({ code, signal }));
    });
    // Errors after start (EPIPE on the IPC channel at exit) are not ours to report.
    this.child.on('error', () => {});
    live.add(this);
  }

  /** The last few KiB the process wrote (stdout when piped, and stderr). */
  output(): string {
    return this.#tail;
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  /** SIGTERM to the group, SIGKILL after `graceMs`, then SIGKILL the group again for stragglers. */
  async stop(graceMs = 3000): Promise<ExitInfo> {
    if (this.running) {
      signalGroup(this.pid, 'SIGTERM');
      const timer = setTimeout(() => signalGroup(this.pid, 'SIGKILL'), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    signalGroup(this.pid, 'SIGKILL');
    return this.exit!;
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group is gone already.
  }
}

const live = new Set<Managed>();
/** Process groups ever started, killed once more at exit in case a leader died before its children. */
const groups = new Set<number>();

export function spawnManaged(
  name: string,
  command: string,
  args: readonly string[],
  opts: SpawnOptions = {},
): Managed {
  const m = new Managed(name, command, args, opts);
  groups.add(m.pid);
  return m;
}

/** Stop every child still running (in parallel). */
export async function stopAll(graceMs = 2000): Promise<void> {
  await Promise.all([...live].map((m) => m.stop(graceMs)));
  for (const pid of groups) signalGroup(pid, 'SIGKILL');
}

/**
 * Run a bench tool's `main` when its file is the entry point: exit 0 when it resolves; else say why
 * (prefixed with `name`), stop every child and exit 1.
 */
export function runMain(name: string, main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${name}: ${err instanceof Error ? err.message : String(err)}\n`);
      void stopAll().finally(() => process.exit(1));
    },
  );
}

let installed = false;

/**
 * Kill every child on any way out: normal exit, uncaught error, SIGINT/SIGTERM/SIGHUP. The exit
 * hook is synchronous, so it can only SIGKILL; signals get a short graceful stop first.
 */
export function installCleanup(log: (s: string) => void = (s) => process.stderr.write(`${s}\n`)): void {
  if (installed) return;
  installed = true;
  process.on('exit', () => {
    for (const pid of groups) signalGroup(pid, 'SIGKILL');
  });
  let interrupted = false;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (interrupted) process.exit(130);
      interrupted = true;
      log(`\n${sig}: stopping child processes`);
      const hardStop = setTimeout(() => process.exit(130), 3000);
      hardStop.unref();
      void stopAll(1000).finally(() => process.exit(130));
    });
  }
}

/** A TCP port free on 127.0.0.1 right now (bind 0, read, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('no port'))));
    });
  });
}

export interface HttpResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export interface GetOptions {
  /** Extra request headers (e.g. Authorization). */
  headers?: Record<string, string>;
  /** https: the PEM certificate(s) to trust, instead of the system store (the bench's own cert). */
  ca?: string;
}

/**
 * One GET on a fresh connection (no agent, Connection: close), bounded by `timeoutMs`; https URLs
 * are verified, against `opts.ca` when given.
 */
export function httpGet(url: string, timeoutMs = 2000, opts: GetOptions = {}): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const send = url.startsWith('https:') ? httpsRequest : request;
    const req = send(
      url,
      {
        agent: false,
        headers: { ...opts.headers, connection: 'close' },
        timeout: timeoutMs,
        ...(opts.ca ? { ca: opts.ca } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/**
 * Poll `url` until it answers `expectStatus`; fail fast if `proc` exits meanwhile, with its output.
 */
export async function waitForHttp(
  url: string,
  opts: GetOptions & { timeoutMs?: number; expectStatus?: number; proc?: Managed } = {},
): Promise<HttpResult> {
  const { timeoutMs = 15_000, expectStatus = 200, proc } = opts;
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (proc && !proc.running) {
      throw new Error(
        `${proc.name} exited (${proc.exit?.code ?? proc.exit?.signal}) before ${url} was ready:\n${proc.output()}`,
      );
    }
    try {
      const res = await httpGet(url, 1000, opts);
      if (res.status === expectStatus) return res;
      last = `status ${res.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(
    `${proc?.name ?? url}: not ready after ${timeoutMs} ms (${last})${proc ? `\n${proc.output()}` : ''}`,
  );
}

/** Path of an executable found in PATH or in `extraDirs`, or undefined. */
export function findExecutable(name: string, extraDirs: readonly string[] = []): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), ...extraDirs];
  for (const dir of dirs) {
    if (!dir) continue;
    const file = join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Send `message` over a peer's IPC channel and resolve with its next message (peers answer
 * questions such as `counts`); rejects after `timeoutMs` without an answer.
 */
export function askPeer<T>(proc: Managed, message: string, timeoutMs = 2000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onMessage = (answer: unknown) => {
      clearTimeout(timer);
      resolve(answer as T);
    };
    const timer = setTimeout(() => {
      proc.child.off('message', onMessage);
      reject(new Error(`${proc.name}: no answer to ${message} within ${timeoutMs} ms\n${proc.output()}`));
    }, timeoutMs);
    proc.child.once('message', onMessage);
    proc.child.send(message);
  });
}
