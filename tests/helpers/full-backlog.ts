/**
 * A TCP listener on 127.0.0.1 whose accept queue is full, so that a new connection to it hangs
 * until the client gives up: the kernel drops its SYN, as for an overloaded or black-holed upstream.
 * Reliable on loopback, unlike a non-routable address (which a machine without a route refuses at
 * once).
 *
 * The listener lives in a worker thread that then blocks, so nothing ever accepts; the queue
 * (backlog 1) is filled by a few connections made here, until one does not complete.
 */
import { connect, type Socket } from 'node:net';
import { Worker } from 'node:worker_threads';

export interface FullBacklog {
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

const LISTENER = `
const { parentPort, workerData } = require('node:worker_threads');
const server = require('node:net').createServer();
server.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
  parentPort.postMessage(server.address().port);
  Atomics.wait(workerData, 0, 0);
  server.close();
});
`;

function connects(port: number, withinMs: number, sockets: Socket[]): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    sockets.push(s);
    s.on('error', () => resolve(false));
    s.once('connect', () => resolve(true));
    setTimeout(() => resolve(false), withinMs).unref();
  });
}

export async function startFullBacklog(): Promise<FullBacklog> {
  const release = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(LISTENER, { eval: true, workerData: release });
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  const fillers: Socket[] = [];
  let full = false;
  for (let i = 0; i < 16 && !full; i++) full = !(await connects(port, 200, fillers));
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  const close = (): Promise<void> => {
    for (const s of fillers) s.destroy();
    Atomics.store(release, 0, 1);
    Atomics.notify(release, 0);
    return exited;
  };
  if (!full) {
    await close();
    throw new Error('could not fill the accept queue of the test listener');
  }
  return { port, url: `http://127.0.0.1:${port}`, close };
}
