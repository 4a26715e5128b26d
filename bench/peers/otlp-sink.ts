/**
 * A tiny OTLP/HTTP receiver: answers 200 to POST /v1/traces and counts what arrived, so the
 * "observed" Peregrine target really exports spans somewhere. GET /stats returns the counters.
 * It does not decode the payload; for JSON payloads it counts `"spanId":` occurrences.
 *
 *   PORT=4318 node bench/peers/otlp-sink.ts
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { exitWithParent, listenPort } from './peer.ts';

export interface SinkStats {
  requests: number;
  bytes: number;
  /** Spans counted in JSON payloads; protobuf payloads are not decoded (0). */
  jsonSpans: number;
}

const SPAN_ID = Buffer.from('"spanId":');

function countOccurrences(buf: Buffer, needle: Buffer): number {
  let n = 0;
  for (let i = buf.indexOf(needle); i !== -1; i = buf.indexOf(needle, i + needle.length)) n++;
  return n;
}

const stats: SinkStats = { requests: 0, bytes: 0, jsonSpans: 0 };

function handle(req: IncomingMessage, res: ServerResponse): void {
  if (req.method === 'GET' && req.url === '/stats') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(stats));
    return;
  }
  if (req.method !== 'POST' || req.url !== '/v1/traces') {
    req.resume();
    res.writeHead(404).end();
    return;
  }
  const json = (req.headers['content-type'] ?? '').includes('json');
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    stats.requests++;
    stats.bytes += body.length;
    if (json) stats.jsonSpans += countOccurrences(body, SPAN_ID);
    res
      .writeHead(200, { 'content-type': json ? 'application/json' : 'application/x-protobuf' })
      .end(json ? '{}' : '');
  });
}

if (import.meta.main) {
  const server = createServer(handle);
  server.listen(listenPort(), '127.0.0.1');
  exitWithParent(server);
}
