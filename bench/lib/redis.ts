/**
 * A local redis-server for the targets whose counters live in Redis: a free loopback port, no
 * persistence, stopped with the target. Needs `redis-server` (Debian: apt-get install redis-server).
 */
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { findExecutable, freePort, type Managed, spawnManaged } from './proc.ts';

export interface BenchRedis {
  readonly url: string;
  readonly proc: Managed;
}

export function redisServerPath(): string | undefined {
  return findExecutable('redis-server', ['/usr/bin', '/usr/local/bin']);
}

function pong(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('error', () => resolve(false));
    socket.once('data', (d) => {
      socket.destroy();
      resolve(d.toString().startsWith('+PONG'));
    });
    socket.write('PING\r\n');
  });
}

export async function startBenchRedis(name: string): Promise<BenchRedis> {
  const bin = redisServerPath();
  if (bin === undefined) throw new Error('redis-server not found (Debian: apt-get install redis-server)');
  const port = await freePort();
  const proc = spawnManaged(name, bin, [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--loglevel',
    'warning',
  ]);
  const deadline = Date.now() + 10_000;
  while (!(await pong(port))) {
    if (!proc.running || Date.now() > deadline) {
      await proc.stop(2000);
      throw new Error(`${name}: redis-server did not answer on port ${port}\n${proc.output()}`);
    }
    await sleep(25);
  }
  return { url: `redis://127.0.0.1:${port}`, proc };
}
