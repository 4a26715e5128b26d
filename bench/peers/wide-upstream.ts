/**
 * Many endpoints in one process: the bench upstream's answer (bench/peers/upstream.ts) on PORT at
 * WIDE_ENDPOINTS loopback addresses (127.0.0.1, 127.0.0.2, ..., 127.0.1.1, ...: Linux routes all of
 * 127.0.0.0/8 to the loopback interface), so an upstream of 1,000 endpoints costs one process.
 * `GET /__wide/stats` on any of them answers how many addresses listen, the connections open now,
 * accepted so far, and requests answered, over all addresses.
 *
 *   PORT=3001 WIDE_ENDPOINTS=1000 node bench/peers/wide-upstream.ts
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { exitWithParent, listenPort } from './peer.ts';
import { UPSTREAM_BODY } from './upstream.ts';

const HEADERS = {
  'content-type': 'application/json',
  'content-length': String(UPSTREAM_BODY.length),
};

/** The i-th address (0-based): 127.0.0.1 ... 127.0.0.250, 127.0.1.1 ..., never a .0 or .255. */
export function wideAddress(i: number): string {
  return `127.0.${Math.floor(i / 250)}.${(i % 250) + 1}`;
}

/** The origins of an upstream of `n` endpoints on `port`. */
export function wideOrigins(n: number, port: number): string[] {
  return Array.from({ length: n }, (_, i) => `http://${wideAddress(i)}:${port}`);
}

const stats = { listening: 0, open: 0, accepted: 0, requests: 0 };

function handle(req: IncomingMessage, res: ServerResponse): void {
  req.resume();
  if (req.url === '/__wide/stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(stats));
    return;
  }
  stats.requests++;
  res.writeHead(200, HEADERS);
  res.end(UPSTREAM_BODY);
}

function counted(server: Server): Server {
  server.on('connection', (socket) => {
    stats.open++;
    stats.accepted++;
    socket.once('close', () => stats.open--);
  });
  return server;
}

if (import.meta.main) {
  const port = listenPort();
  const n = Number(process.env.WIDE_ENDPOINTS ?? 1);
  if (!Number.isInteger(n) || n < 1 || n > 60_000) {
    process.stderr.write('WIDE_ENDPOINTS must be an integer from 1 to 60000\n');
    process.exit(2);
  }
  const servers: Server[] = [];
  for (let i = 0; i < n; i++) {
    const server = counted(createServer({ keepAliveTimeout: 60_000 }, handle));
    server.listen(port, wideAddress(i), () => stats.listening++);
    server.on('error', (err) => {
      process.stderr.write(`${wideAddress(i)}:${port}: ${err.message}\n`);
      process.exit(1);
    });
    servers.push(server);
  }
  exitWithParent(...servers);
}
