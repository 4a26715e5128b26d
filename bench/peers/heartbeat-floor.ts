/**
 * The floor of a renewal: a bare node:http server that answers every request as Peregrine answers
 * a heartbeat (status, headers, a body of the same size; 204 and no body to `prefer:
 * return=minimal`, as Peregrine's client asks), with no routing, authentication, store, metrics or
 * tracing. What a renewal costs in Node before the registry does anything
 * (bench/instructions.ts `registry-floor`).
 *
 *   PORT=9902 node bench/peers/heartbeat-floor.ts
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { exitWithParent, listenPort } from './peer.ts';

/** A renewal's answer as the registration API writes it without `prefer: return=minimal` (docs/registry.md). */
const BODY =
  '{"outcome":"renewed","instance":{"service":"hb-0","id":"i-0","address":"10.0.0.1","port":8080,"protocol":"http","zone":null,"version":null,"weight":1,"metadata":{},"state":"active","ttlMs":15000,"expiresAt":"2026-12-06T09:01:28.984Z","lastHeartbeat":"2026-12-06T09:01:13.984Z","registeredAt":"2026-12-06T09:01:13.697Z","registeredVia":"vm/25158"},"heartbeatIntervalMs":5000}';
const LENGTH = Buffer.byteLength(BODY);

function handle(req: IncomingMessage, res: ServerResponse): void {
  req.resume();
  if (req.headers.prefer === 'return=minimal') {
    res
      .writeHead(204, {
        'cache-control': 'no-store',
        'preference-applied': 'return=minimal',
        'x-request-id': randomUUID(),
      })
      .end();
    return;
  }
  res.writeHead(200, {
    'content-type': 'application/json',
    'content-length': LENGTH,
    'cache-control': 'no-store',
    'x-request-id': randomUUID(),
  });
  res.end(BODY);
}

// The registration listener's HTTP settings (src/registry/schema.ts defaults).
const server = createServer(
  { keepAliveTimeout: 65_000, headersTimeout: 10_000, requestTimeout: 30_000, maxHeaderSize: 16 * 1024 },
  handle,
);
server.listen(listenPort(), '127.0.0.1');
exitWithParent(server);
