/**
 * The floor: the least a Node proxy can do. A node:http server and one undici Pool to the
 * upstream; each request is streamed to the upstream with `pool.stream`, and the response status,
 * headers (minus hop-by-hop) and body are copied back. No routing, no telemetry, no header
 * hygiene beyond hop-by-hop.
 *
 *   PORT=8081 UPSTREAM=http://127.0.0.1:3001 node bench/peers/bare-undici.ts
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { Pool } from 'undici';
import { exitWithParent, listenPort, upstreamOrigin } from './peer.ts';

const HOP_BY_HOP = [
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
];

function withoutHopByHop(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const out = { ...headers };
  for (const name of HOP_BY_HOP) delete out[name];
  return out;
}

// Same pool shape as Peregrine's per-endpoint pool: 128 connections, keep-alive, no pipelining.
const pool = new Pool(upstreamOrigin(), { connections: 128, pipelining: 1 });

function handle(req: IncomingMessage, res: ServerResponse): void {
  const hasBody =
    req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  if (!hasBody) req.resume();
  pool
    .stream(
      {
        method: req.method as 'GET',
        path: req.url ?? '/',
        headers: withoutHopByHop(req.headers),
        body: hasBody ? req : null,
      },
      ({ statusCode, headers }) => {
        res.writeHead(statusCode, withoutHopByHop(headers as IncomingHttpHeaders));
        return res;
      },
    )
    .catch(() => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
}

if (import.meta.main) {
  const server = createServer({ keepAliveTimeout: 60_000 }, handle);
  server.listen(listenPort(), '127.0.0.1');
  exitWithParent(server);
}
