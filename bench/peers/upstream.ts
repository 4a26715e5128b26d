/**
 * The benchmark upstream: a minimal node:http server answering every request with the same small
 * JSON body (about 100 bytes) over keep-alive. Run in its own process by bench/run.ts.
 *
 *   PORT=3001 node bench/peers/upstream.ts
 *
 * MORE_PORTS=3002,3003 makes it answer on those ports too, as that many endpoints of one service
 * (bench/registry.ts's churn), counting the requests each received; the IPC message `counts` asks
 * for them (answered `{ counts: { "3002": n, … } }`).
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

/** A server on `port` that counts what it answers in `counts`. */
function countingServer(port: number, counts: Map<number, number>): void {
  counts.set(port, 0);
  const server = createServer({ keepAliveTimeout: 60_000 }, function counted(req, res) {
    counts.set(port, counts.get(port)! + 1);
    handle(req, res);
  });
  server.listen(port, '127.0.0.1');
}

if (import.meta.main) {
  const server = createServer({ keepAliveTimeout: 60_000 }, handle);
  server.listen(listenPort(), '127.0.0.1');
  const more = (process.env.MORE_PORTS ?? '').split(',').filter(Boolean).map(Number);
  if (more.length) {
    const counts = new Map<number, number>();
    for (const port of more) countingServer(port, counts);
    process.on('message', (m) => {
      if (m === 'counts') process.send?.({ counts: Object.fromEntries(counts) });
    });
  }
  exitWithParent(server);
}
