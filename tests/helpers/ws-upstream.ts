/**
 * An upstream that speaks WebSocket (echo) on a real HTTP server on 127.0.0.1:0, answering plain
 * requests with a fixed status, and recording the handshakes and plain requests it received.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';

export interface WsUpstream {
  readonly url: string;
  /** Handshake requests the upstream received, in order. */
  readonly handshakes: IncomingMessage[];
  /** Plain HTTP requests the upstream received. */
  plainRequests: number;
  readonly sockets: import('ws').WebSocket[];
  close(): Promise<void>;
}

/** An upstream that speaks WebSocket (echo) and answers plain requests with `plainStatus`. */
export async function wsUpstream(plainStatus = 200): Promise<WsUpstream> {
  const server: Server = createServer((_req, res) => {
    up.plainRequests++;
    res.writeHead(plainStatus, { 'content-type': 'text/plain' });
    res.end('plain');
  });
  const wss = new WebSocketServer({ server });
  const up: WsUpstream = {
    url: '',
    handshakes: [],
    plainRequests: 0,
    sockets: [],
    close: async () => {
      for (const s of up.sockets) s.terminate();
      await new Promise((r) => wss.close(r));
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
  wss.on('connection', (sock, req) => {
    up.handshakes.push(req);
    up.sockets.push(sock);
    sock.on('error', () => {});
    sock.on('message', (m) => sock.send(`echo:${m.toString()}`));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  (up as { url: string }).url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return up;
}

export interface Refusal {
  readonly status: number;
  readonly headers: IncomingMessage['headers'];
  readonly body: string;
}

export interface Handshake {
  readonly ws: WebSocket;
  /** How the handshake ended: 'open' (101), or the answer that refused it. */
  readonly outcome: Promise<'open' | Refusal>;
  /** The 101's response head, once the tunnel is open. */
  readonly upgradeHeaders: Promise<IncomingMessage['headers']>;
}

/** A WebSocket handshake to 127.0.0.1:`port` (the caller terminates `ws`). */
export function wsHandshake(port: number, path = '/chat', headers: Record<string, string> = {}): Handshake {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, { headers });
  ws.on('error', () => {});
  const upgradeHeaders = new Promise<IncomingMessage['headers']>((resolve) => {
    ws.once('upgrade', (res) => resolve(res.headers));
  });
  const outcome = new Promise<'open' | Refusal>((resolve) => {
    ws.once('open', () => resolve('open'));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => {
        body += c.toString();
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
  });
  return { ws, outcome, upgradeHeaders };
}

export async function refusal(h: Handshake): Promise<Refusal> {
  const outcome = await h.outcome;
  if (outcome === 'open') throw new Error('the handshake was not refused: the tunnel opened');
  return outcome;
}

export async function opened(h: Handshake): Promise<void> {
  const outcome = await h.outcome;
  if (outcome !== 'open') throw new Error(`the handshake was refused with ${outcome.status} ${outcome.body}`);
}
