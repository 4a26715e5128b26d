/**
 * The demo's service: a tiny HTTP service that registers itself with Peregrine's registry through
 * the project's registration client, and on SIGINT/SIGTERM drains, deregisters and exits. Every
 * answer says which instance served it and the trace it belongs to (the `traceparent` the gateway
 * sent), so you can see the gateway balance between instances and find the trace.
 *
 *   DEMO_REGISTRY=http://127.0.0.1:9902 DEMO_TOKEN=... DEMO_INSTANCE=hello-1 node examples/demo/hello-service.ts
 *
 * Settings (environment): DEMO_REGISTRY (the registration API), DEMO_TOKEN (a registry token for
 * the service), DEMO_SERVICE (default hello), DEMO_INSTANCE (default hello-<port>), DEMO_ZONE,
 * DEMO_STDIN_IS_PARENT=1 (stop when stdin ends). `npm run demo` starts two of these.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { RegistrationClient } from '../../src/registry/client.ts';

const env = process.env;
const registry = env.DEMO_REGISTRY;
if (!registry) {
  process.stderr.write('DEMO_REGISTRY (the registration API, e.g. http://127.0.0.1:9902) is required\n');
  process.exit(2);
}
const service = env.DEMO_SERVICE ?? 'hello';
const zone = env.DEMO_ZONE || undefined;

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

let id = '';
const server = createServer((req, res) => {
  const body = JSON.stringify({
    service,
    instance: id,
    zone: zone ?? null,
    path: req.url,
    // W3C trace context as the gateway sent it: version-traceid-spanid-flags.
    traceId: String(req.headers.traceparent ?? '').split('-')[1] ?? null,
  });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address() as AddressInfo;
id = env.DEMO_INSTANCE ?? `${service}-${port}`;

const registration = new RegistrationClient({
  registry,
  service,
  id,
  address: '127.0.0.1',
  port,
  zone,
  token: env.DEMO_TOKEN,
  metadata: { demo: 'true' },
  ttlMs: 6000,
  drainDelayMs: 1000,
});
registration.on('failure', (err: Error) => say(`registry: ${err.message}`));
registration.on('reregistered', () => say('the registry had lost the lease: registering again'));
registration.on('deregistered', () => say('deregistered'));

let stopping: Promise<void> | undefined;
function stop(why: string): Promise<void> {
  stopping ??= (async () => {
    say(`${why}: draining (no new requests), then deregistering`);
    await registration.close();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    process.exit(0);
  })();
  return stopping;
}
process.on('SIGINT', () => void stop('SIGINT'));
process.on('SIGTERM', () => void stop('SIGTERM'));
// The demo gives its instances a pipe on stdin: if the demo goes away, so do they.
if (env.DEMO_STDIN_IS_PARENT === '1') process.stdin.on('end', () => void stop('demo gone')).resume();

try {
  await registration.start();
} catch (err) {
  // Stopped before the registration completed: stop() exits.
  if (stopping !== undefined) await stopping;
  say(`registration refused: ${(err as Error).message}`);
  process.exit(1);
}
say(`serving on http://127.0.0.1:${port}, registered as ${service}/${id}${zone ? ` in zone ${zone}` : ''}`);
