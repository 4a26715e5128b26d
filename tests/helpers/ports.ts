import { type AddressInfo, createServer } from 'node:net';

/**
 * A loopback port free a moment ago, for a program that must be told its port in advance (it may
 * be taken again before that program binds it: callers that can, retry).
 */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
