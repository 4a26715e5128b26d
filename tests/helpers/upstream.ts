/**
 * A real upstream HTTP server on 127.0.0.1:0 that misbehaves on command, chosen by path:
 *
 *   /echo...            200 JSON {method, url, headers, rawHeaders} (default for any other path)
 *   /status/<code>      that status with a small body
 *   /delay/<ms>         respond after <ms>
 *   /bytes/<n>          stream n bytes (64 KiB chunks, honouring backpressure)
 *   /echo-body          stream the request body back
 *   /sink               read the body, respond {bytes}
 *   /cut/<n>            declare 2n bytes, send n, then destroy the socket
 *   /reset              destroy the socket without responding
 *   /hang               never respond (until the test closes the server)
 *   /slow-body/<ms>     send headers and one chunk, then one more chunk after <ms>
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  rawHeaders: string[];
  /** Set when the request was aborted by the peer (the gateway) before it finished. */
  aborted: boolean;
}

export interface TestUpstream {
  readonly url: string;
  readonly port: number;
  readonly server: Server;
  readonly requests: SeenRequest[];
  /** Requests whose connection closed before the response finished. */
  abortedCount(): number;
  close(): Promise<void>;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function streamBytes(res: ServerResponse, total: number): void {
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  let sent = 0;
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total });
  const pump = (): void => {
    while (sent < total) {
      const n = Math.min(chunk.length, total - sent);
      sent += n;
      if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  pump();
}

export async function startUpstream(
  custom?: (req: IncomingMessage, res: ServerResponse, seen: SeenRequest) => boolean | undefined,
): Promise<TestUpstream> {
  const requests: SeenRequest[] = [];
  const sockets = new Set<Socket>();
  const server = createServer({ keepAliveTimeout: 10_000 }, (req, res) => {
    const seen: SeenRequest = {
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      aborted: false,
    };
    requests.push(seen);
    res.on('close', () => {
      if (!res.writableFinished) seen.aborted = true;
    });
    if (custom?.(req, res, seen)) return;
    const url = req.url ?? '/';
    const [, head, arg] = url.split('?')[0]!.split('/');
    switch (head) {
      case 'status':
        json(res, Number(arg), { status: Number(arg) });
        return;
      case 'delay':
        setTimeout(() => json(res, 200, { delayed: Number(arg) }), Number(arg));
        return;
      case 'bytes':
        streamBytes(res, Number(arg));
        return;
      case 'echo-body':
        res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/octet-stream' });
        req.pipe(res);
        return;
      case 'sink': {
        let bytes = 0;
        req.on('data', (c: Buffer) => {
          bytes += c.length;
        });
        req.on('end', () => json(res, 200, { bytes }));
        return;
      }
      case 'cut': {
        const n = Number(arg);
        res.writeHead(200, { 'content-length': 2 * n });
        res.write(Buffer.alloc(n, 0x62), () => setTimeout(() => res.socket?.destroy(), 20));
        return;
      }
      case 'reset':
        req.socket.destroy();
        return;
      case 'hang':
        return;
      case 'slow-body':
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('first\n');
        setTimeout(() => res.end('second\n'), Number(arg));
        return;
      default:
        json(res, 200, {
          method: req.method,
          url: req.url,
          headers: req.headers,
          rawHeaders: req.rawHeaders,
        });
    }
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    requests,
    abortedCount: () => requests.filter((r) => r.aborted).length,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
