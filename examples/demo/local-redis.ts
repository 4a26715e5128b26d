/**
 * A throwaway redis-server for the demo: a random loopback port, its files in the demo's temporary
 * directory, nothing persisted. Its own process group, so a Ctrl-C in the terminal leaves it to
 * the demo to stop it last (after the instances have deregistered through it).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { openSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface LocalRedis {
  readonly url: string;
  /** SIGTERM, then SIGKILL if it has not exited within 5 s. Safe to call twice. */
  stop(): Promise<void>;
}

/** Whether `bin` runs (`redis-server --version`). */
export function redisServerInstalled(bin: string): boolean {
  const probe = spawnSync(bin, ['--version'], { stdio: 'ignore' });
  return probe.error === undefined && probe.status === 0;
}

async function freeLoopbackPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** PONG to an inline PING within 500 ms. */
function pings(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once('error', () => done(false));
    socket.once('data', (d) => done(d.toString().startsWith('+PONG')));
    socket.write('PING\r\n');
  });
}

/** `started` is told of the process at once, so whoever started it can kill it even mid-start. */
export async function startLocalRedis(
  dir: string,
  bin: string,
  started: (child: ChildProcess) => void,
): Promise<LocalRedis> {
  const port = await freeLoopbackPort();
  const log = openSync(join(dir, 'redis.log'), 'a');
  const child = spawn(
    bin,
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'],
    { detached: true, stdio: ['ignore', log, log] },
  );
  started(child);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  const deadline = Date.now() + 10_000;
  while (!(await pings(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server did not start on port ${port} (see ${join(dir, 'redis.log')})`);
    }
    await sleep(50);
  }
  let stopping: Promise<void> | undefined;
  return {
    url: `redis://127.0.0.1:${port}`,
    stop() {
      stopping ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        if (!(await Promise.race([exited.then(() => true), sleep(5000, false)]))) {
          child.kill('SIGKILL');
          await exited;
        }
      })();
      return stopping;
    },
  };
}
