/**
 * A real redis-server for tests, on a random loopback port, in a temporary directory; stopped,
 * restarted (same port, same data when persistent) and removed by the test.
 *
 * Needs the `redis-server` binary, found like every external program the tests run
 * (tests/helpers/tools.ts: REDIS_SERVER_BIN, PATH, or .tools/ from scripts/get-tools.sh).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './ports.ts';
import { findTool, REDIS_SERVER } from './tools.ts';

export interface TestRedis {
  readonly port: number;
  readonly url: string;
  /** Running now. */
  readonly running: boolean;
  /** Stop (SIGTERM: a persistent server writes its data first). */
  stop(): Promise<void>;
  /** Start again on the same port and directory. */
  start(): Promise<void>;
  /**
   * Freeze the server (SIGSTOP): connections stay open and nothing is answered, like a Redis
   * that is alive but too slow. `resume()` (SIGCONT) thaws it.
   */
  pause(): void;
  resume(): void;
  /** The `requirepass` it was started with, if any. */
  readonly password: string | undefined;
  /** The process the helper spawned (with `launch`: the shell, which must have become redis-server). */
  readonly pid: number | undefined;
  /** With `launch`: the arguments redis-server was given, as it received them. */
  launchedArgs(): string[];
  /** Send a command through a fresh connection (authenticated when it has a password); resolves with the raw reply. */
  command(...args: string[]): Promise<string>;
  /** Stop and remove the directory. Safe to call twice. */
  close(): Promise<void>;
}

/** Kill on worker exit too, so a crashed test run never leaves a redis-server behind. */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

const resp = (args: string[]): string =>
  `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;

/**
 * RESP-encode a command, send it on a new connection (after `AUTH <auth...>` when given: a
 * password, or a user and a password), return the first reply line(s) of the command (AUTH's
 * reply instead when AUTH is refused).
 */
export function send(
  port: number,
  args: string[],
  timeoutMs = 2000,
  auth?: readonly string[],
): Promise<string> {
  const authOk = auth === undefined ? '' : '+OK\r\n';
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('redis command timed out'));
    }, timeoutMs);
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('data', (chunk) => {
      data += chunk.toString();
      const authRefused = authOk !== '' && data.length >= authOk.length && !data.startsWith(authOk);
      if (data.endsWith('\r\n') && (authRefused || data.length > authOk.length)) {
        clearTimeout(timer);
        socket.end();
        resolve(authRefused ? data : data.slice(authOk.length));
      }
    });
    socket.write((auth === undefined ? '' : resp(['AUTH', ...auth])) + resp(args));
  });
}

export interface StartRedisOptions {
  readonly persistent?: boolean;
  /** `--requirepass`: every client must AUTH (the `default` user's password). */
  readonly password?: string;
  /** More server arguments, after the helper's own (a later option wins in redis-server). */
  readonly args?: readonly string[];
  /** A configuration file, read before every argument (as `redis-server <file> [options]`). */
  readonly configFile?: string;
  /**
   * Start it as a container would: `argv` runs as it is (a shell script, or `redis-server …`) with
   * only `env` and a PATH whose `redis-server` records its arguments and runs the real one with
   * them, then the helper's port, address, directory and log level (later options win). The other
   * options but `password` are not used.
   */
  readonly launch?: { readonly argv: readonly string[]; readonly env?: Readonly<Record<string, string>> };
}

/** `command` as an absolute path, looked up on `path` when it is a bare name. */
function absolutePath(command: string, path = ''): string {
  if (command.includes('/')) return command;
  for (const d of path.split(':')) if (d !== '' && existsSync(join(d, command))) return join(d, command);
  throw new Error(`${command} is not on PATH`);
}

/** Shell single-quoting. */
const sq = (s: string): string => `'${s.replaceAll("'", `'\\''`)}'`;

export async function startRedis(opts: StartRedisOptions = {}): Promise<TestRedis> {
  const redis = findTool(REDIS_SERVER, 'the Redis-backed tests');
  const auth = opts.password === undefined ? undefined : [opts.password];
  const dir = mkdtempSync(join(tmpdir(), 'peregrine-redis-'));
  let port = 0;
  let proc: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let log = '';

  const spawnOnce = async (): Promise<boolean> => {
    const args = [
      ...(opts.configFile === undefined ? [] : [opts.configFile]),
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--save',
      '',
      '--appendonly',
      opts.persistent ? 'yes' : 'no',
      '--appendfsync',
      'always',
      '--daemonize',
      'no',
      '--loglevel',
      'warning',
      ...(opts.password === undefined ? [] : ['--requirepass', opts.password]),
      ...(opts.args ?? []),
    ];
    log = '';
    const p =
      opts.launch === undefined
        ? spawn(redis.path, args, { env: redis.env, stdio: ['ignore', 'pipe', 'pipe'] })
        : launch(opts.launch);
    proc = p;
    running.add(p);
    let done = false;
    exited = new Promise<void>((resolve) => {
      p.once('exit', () => {
        done = true;
        running.delete(p);
        resolve();
      });
      p.once('error', () => {
        done = true;
        running.delete(p);
        resolve();
      });
    });
    for (const s of [p.stdout!, p.stderr!]) s.setEncoding('utf8').on('data', (c: string) => (log += c));
    const deadline = Date.now() + 10_000;
    while (!done && Date.now() < deadline) {
      try {
        // Up: PONG, or (a password from `args` or the file, unknown here) a demand to authenticate.
        if (/^(\+PONG|-NOAUTH)/.test(await send(port, ['PING'], 500, auth))) return true;
      } catch {
        // not up yet
      }
      await sleep(25);
    }
    if (!done) {
      p.kill('SIGKILL');
      await exited;
      throw new Error(`redis-server did not answer within 10 s\n${log}`);
    }
    return false;
  };

  const start = async (newPortIfTaken: boolean): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      if (await spawnOnce()) return;
      // The port may have been taken between freePort() and the bind: a new one (first start only).
      if (!newPortIfTaken || attempt >= 3 || !/Address already in use/i.test(log))
        throw new Error(`redis-server did not start on port ${port}\n${log}`);
      port = await freePort();
    }
  };

  const bin = join(dir, 'bin');
  const argsFile = join(dir, 'launched-args');
  /** The container's command, with the recording `redis-server` first on its PATH. */
  const launch = (l: NonNullable<StartRedisOptions['launch']>): ChildProcess => {
    const real = absolutePath(redis.path, redis.env.PATH);
    const own = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--daemonize', 'no'];
    mkdirSync(bin, { recursive: true });
    writeFileSync(
      join(bin, 'redis-server'),
      `#!/bin/sh\nprintf '%s\\n' "$@" > ${sq(argsFile)}\nexec ${sq(real)} "$@" ${[...own, '--loglevel', 'warning'].map(sq).join(' ')}\n`,
      { mode: 0o755 },
    );
    const env: Record<string, string> = { ...l.env, PATH: `${bin}:${dirname(real)}:/usr/bin:/bin` };
    // A local copy of redis-server (tests/helpers/tools.ts) finds its libraries through this.
    if (redis.env.LD_LIBRARY_PATH !== undefined) env.LD_LIBRARY_PATH = redis.env.LD_LIBRARY_PATH;
    const [file, ...rest] = l.argv;
    return spawn(file!, rest, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  };

  port = await freePort();
  await start(true);
  let closed = false;
  const stop = async (): Promise<void> => {
    if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
    // A paused server would not see the SIGTERM until thawed.
    proc.kill('SIGCONT');
    proc.kill('SIGTERM');
    const killed = await Promise.race([exited.then(() => true), sleep(5000, false)]);
    if (!killed) {
      proc.kill('SIGKILL');
      await exited;
    }
  };
  const isRunning = (): boolean => proc !== undefined && proc.exitCode === null && proc.signalCode === null;
  return {
    get port() {
      return port;
    },
    get url() {
      return `redis://127.0.0.1:${port}`;
    },
    get running() {
      return isRunning();
    },
    stop,
    pause() {
      if (isRunning()) proc!.kill('SIGSTOP');
    },
    resume() {
      if (isRunning()) proc!.kill('SIGCONT');
    },
    async start() {
      if (isRunning()) return;
      await start(false);
    },
    password: opts.password,
    get pid() {
      return proc?.pid;
    },
    launchedArgs: () => readFileSync(argsFile, 'utf8').split('\n').slice(0, -1),
    command: (...args) => send(port, args, 2000, auth),
    async close() {
      if (closed) return;
      closed = true;
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface RedisMonitor {
  /** Each command Redis ran since MONITOR began, as its arguments (the command name first). */
  readonly commands: string[][];
  close(): void;
}

/**
 * Redis's MONITOR on a raw connection of its own (ioredis's monitor mode can mistake the stream for
 * replies under load): resolves once Redis has confirmed it, so every later command is seen.
 */
export async function monitorRedis(url: string): Promise<RedisMonitor> {
  const { hostname, port } = new URL(url);
  const socket = connect({ host: hostname, port: Number(port) });
  const commands: string[][] = [];
  let buffer = '';
  let confirmed: () => void = () => {};
  const ok = new Promise<void>((resolve) => (confirmed = resolve));
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    for (let end = buffer.indexOf('\r\n'); end !== -1; end = buffer.indexOf('\r\n')) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (line === '+OK') confirmed();
      // `+<time> [<db> <client>] "arg" "arg" …`, quotes and backslashes escaped.
      else
        commands.push([...line.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!.replace(/\\(.)/g, '$1')));
    }
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.write('MONITOR\r\n');
  await ok;
  return { commands, close: () => socket.destroy() };
}
