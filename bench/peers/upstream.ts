/**
 * The benchmark upstream: a minimal node:http server answering every request with the same small
 * JSON body (about 100 bytes) over keep-alive. Run in its own process by bench/run.ts.
 *
 *   PORT=3001 node bench/peers/upstream.ts
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { exitWithParent, listenPort } from './peer.ts';

export const UPSTREAM_BODY = Buffer.from(
  `${JSON.stringify({ ok: true, service: 'bench-upstream', message: 'a small fixed body, about one hundred bytes long' })}\n`,
);

const HEADERS = {
  'content-type': 'application/json',
  'content-length': String(UPSTREAM_BODY.length),
};

function handle(req: IncomingMessage, res: ServerResponse): void {
  // Drain any request body so the connection stays reusable, then answer.
  req.resume();
  res.writeHead(200, HEADERS);
  res.end(UPSTREAM_BODY);
}

if (import.meta.main) {
  const server = createServer({ keepAliveTimeout: 60_000 }, handle);
  server.listen(listenPort(), '127.0.0.1');
  exitWithParent(server);
}
