/**
 * A real JWKS endpoint on 127.0.0.1:0 that misbehaves on command, for testing key fetching:
 *
 *   serve       200 with the current key set (ETag, optional Cache-Control; 304 on If-None-Match)
 *   error       500
 *   blackhole   accept the request and never answer (until the mode changes or the server closes)
 *   redirect    302 to /moved, which serves the key set (a client that follows redirects would get keys)
 *   huge        200 with a 2 MiB body (`declared`: with Content-Length; otherwise chunked)
 *   not-json    200 with a body that is not JSON
 *   slow        answer after `delayMs`
 *
 * `down()` closes the listening socket (connections are refused) and `up()` listens again on the
 * same port. Requests are counted per path; `requests` counts the JWKS path only.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type JwksMode = 'serve' | 'error' | 'blackhole' | 'redirect' | 'huge' | 'not-json' | 'slow';

export interface JwksDocument {
  keys: Record<string, unknown>[];
}

export interface JwksServer {
  /** The JWKS URL (`/jwks.json`). */
  readonly url: string;
  readonly port: number;
  /** Requests that reached the JWKS path. */
  readonly requests: number;
  /** Requests by path (e.g. `/moved` for redirect targets). */
  readonly byPath: ReadonlyMap<string, number>;
  /** Conditional requests answered 304. */
  readonly notModified: number;
  setKeys(jwks: JwksDocument): void;
  setMode(mode: JwksMode, opts?: { delayMs?: number; declared?: boolean }): void;
  /** Cache-Control for 200 responses; undefined sends none. */
  setCacheControl(value: string | undefined): void;
  /** Wait until the JWKS path has seen `n` requests (or time out). */
  waitForRequests(n: number, timeoutMs?: number): Promise<void>;
  down(): Promise<void>;
  up(): Promise<void>;
  close(): Promise<void>;
}

export async function startJwksServer(initial: JwksDocument = { keys: [] }): Promise<JwksServer> {
  let jwks = initial;
  let etag = '"0"';
  let version = 0;
  let mode: JwksMode = 'serve';
  let delayMs = 0;
  let declared = false;
  let cacheControl: string | undefined;
  let requests = 0;
  let notModified = 0;
  const byPath = new Map<string, number>();
  const sockets = new Set<Socket>();
  const hanging = new Set<ServerResponse>();

  function serveKeys(req: IncomingMessage, res: ServerResponse): void {
    if (req.headers['if-none-match'] === etag) {
      notModified++;
      res.writeHead(304, { etag, ...(cacheControl ? { 'cache-control': cacheControl } : {}) });
      res.end();
      return;
    }
    const body = JSON.stringify(jwks);
    res.writeHead(200, {
      'content-type': 'application/jwk-set+json',
      'content-length': Buffer.byteLength(body),
      etag,
      ...(cacheControl ? { 'cache-control': cacheControl } : {}),
    });
    res.end(body);
  }

  function handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0]!;
    byPath.set(path, (byPath.get(path) ?? 0) + 1);
    if (path === '/moved') {
      serveKeys(req, res);
      return;
    }
    if (path !== '/jwks.json') {
      res.writeHead(404).end();
      return;
    }
    requests++;
    switch (mode) {
      case 'serve':
        serveKeys(req, res);
        return;
      case 'error':
        res.writeHead(500, { 'content-type': 'text/plain' }).end('internal error: db password is hunter2');
        return;
      case 'blackhole':
        hanging.add(res);
        res.on('close', () => hanging.delete(res));
        return;
      case 'redirect':
        res.writeHead(302, { location: '/moved' }).end();
        return;
      case 'huge': {
        const chunk = Buffer.alloc(64 * 1024, 0x20);
        const total = 2 * 1024 * 1024;
        res.writeHead(200, {
          'content-type': 'application/json',
          ...(declared ? { 'content-length': total } : {}),
        });
        let sent = 0;
        const pump = (): void => {
          while (sent < total) {
            sent += chunk.length;
            if (!res.write(chunk)) {
              res.once('drain', pump);
              return;
            }
          }
          res.end();
        };
        res.on('error', () => undefined);
        pump();
        return;
      }
      case 'not-json':
        res.writeHead(200, { 'content-type': 'application/json' }).end('<html>login</html>');
        return;
      case 'slow':
        setTimeout(() => serveKeys(req, res), delayMs);
        return;
    }
  }

  const server: Server = createServer(handle);
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let listening = true;

  function dropConnections(): void {
    for (const res of hanging) res.destroy();
    hanging.clear();
    for (const s of sockets) s.destroy();
    sockets.clear();
  }

  return {
    url: `http://127.0.0.1:${port}/jwks.json`,
    port,
    get requests() {
      return requests;
    },
    get byPath() {
      return byPath;
    },
    get notModified() {
      return notModified;
    },
    setKeys(next) {
      jwks = next;
      etag = `"${++version}"`;
    },
    setMode(next, opts) {
      if (mode === 'blackhole' && next !== 'blackhole') {
        for (const res of hanging) res.destroy();
        hanging.clear();
      }
      mode = next;
      delayMs = opts?.delayMs ?? 0;
      declared = opts?.declared ?? false;
    },
    setCacheControl(value) {
      cacheControl = value;
    },
    async waitForRequests(n, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (requests < n) {
        if (Date.now() > deadline) throw new Error(`JWKS server saw ${requests} requests, expected ${n}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    async down() {
      if (!listening) return;
      listening = false;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      dropConnections();
      await closed;
    },
    async up() {
      if (listening) return;
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => {
          server.off('error', reject);
          resolve();
        });
      });
      listening = true;
    },
    async close() {
      if (!listening) {
        dropConnections();
        return;
      }
      listening = false;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      dropConnections();
      await closed;
    },
  };
}
