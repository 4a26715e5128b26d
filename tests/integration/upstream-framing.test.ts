/**
 * Malformed upstream responses (threat catalogue A): answered 502 UPSTREAM_PROTOCOL_ERROR, and the
 * upstream connection that carried one is never used again (its framing can no longer be trusted).
 * The upstream is a raw TCP server, so it can send what no HTTP library would.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';

const RESPONSES: Record<string, string> = {
  '/good': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
  '/cl-and-te': 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  '/two-lengths': 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd',
  '/bad-status': 'HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n',
  '/bad-header': 'HTTP/1.1 200 OK\r\nX Bad: 1\r\nContent-Length: 0\r\n\r\n',
};

interface Seen {
  path: string;
  connection: number;
}

let upstream: Server;
let gw: TestGateway;
const seen: Seen[] = [];
const closed = new Set<number>();
let connections = 0;

beforeAll(async () => {
  upstream = createServer((socket: Socket) => {
    const id = ++connections;
    let buffered = '';
    socket.on('close', () => closed.add(id));
    socket.on('error', () => {});
    socket.on('data', (chunk) => {
      buffered += chunk.toString('latin1');
      for (let end = buffered.indexOf('\r\n\r\n'); end !== -1; end = buffered.indexOf('\r\n\r\n')) {
        const head = buffered.slice(0, end);
        buffered = buffered.slice(end + 4);
        const path = head.split(' ')[1] ?? '';
        seen.push({ path, connection: id });
        socket.write(RESPONSES[path] ?? 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const port = (upstream.address() as { port: number }).port;
  gw = await startGateway({
    upstreams: {
      raw: {
        endpoints: [`http://127.0.0.1:${port}`],
        retries: { maxAttempts: 1 },
        circuitBreaker: { enabled: false },
        outlierDetection: { enabled: false },
      },
    },
    routes: [{ name: 'all', match: { path: '/' }, upstream: 'raw' }],
  });
});

afterAll(async () => {
  await gw?.close();
  await new Promise((resolve) => upstream?.close(resolve));
});

describe('malformed upstream responses', () => {
  for (const path of ['/cl-and-te', '/two-lengths', '/bad-status', '/bad-header']) {
    it(`${path}: 502 UPSTREAM_PROTOCOL_ERROR, and that upstream connection is not reused`, async () => {
      // A good exchange first, so a kept-alive connection exists for the bad one to arrive on.
      expect((await fetch(`${gw.url}/good`)).status).toBe(200);
      const res = await fetch(`${gw.url}${path}`);
      expect(res.status).toBe(502);
      expect(res.headers.get('content-type')).toBe('application/problem+json');
      expect(((await res.json()) as { code: string }).code).toBe('UPSTREAM_PROTOCOL_ERROR');
      const bad = seen.findLast((s) => s.path === path)!;
      expect(bad).toBeDefined();
      // Keep-alive works: the bad request went over the connection the good one before it used.
      expect(seen[seen.indexOf(bad) - 1]).toEqual({ path: '/good', connection: bad.connection });

      expect(await (await fetch(`${gw.url}/good`)).text()).toBe('ok');
      const after = seen[seen.length - 1]!;
      expect(after.path).toBe('/good');
      expect(after.connection).not.toBe(bad.connection);
      const deadline = Date.now() + 2000;
      while (!closed.has(bad.connection) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 10));
      expect(closed.has(bad.connection)).toBe(true);
      // The bad path reached the upstream once: a protocol error is not retried here (maxAttempts 1).
      expect(seen.filter((s) => s.path === path)).toHaveLength(1);
    });
  }
});
