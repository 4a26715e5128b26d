/**
 * WebSocket upgrades. A handshake is a request: it takes the pipeline's stages in their order
 * (context and SERVER span, normalise, route, policies, admission, endpoint, upstream headers,
 * CLIENT span with trace context, finish), and only its forwarding differs. Its socket gets a
 * response object of its own, so a refusal or an upstream's answer other than 101 is written like
 * any response; a 101 joins the two sockets byte for byte.
 */

import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import type { Dispatcher } from 'undici';
import { GatewayError } from '../../errors.ts';
import { ServerResponse, STATUS_CODES } from '../../node-http.ts';
import type { WebSocketOutcome } from '../../telemetry/metrics.ts';
import { endClientSpan } from '../../telemetry/tracing.ts';
import type { RequestContext } from '../context.ts';
import type { Pipeline } from '../pipeline.ts';
import type { Cluster } from '../upstream/cluster.ts';
import type { Endpoint } from '../upstream/endpoint.ts';
import { type AttemptObserver, ResponseForwarder } from './forwarder.ts';
import { cleanResponseHeaders } from './headers.ts';
import type { AttemptOutcome } from './upstream-errors.ts';

/** Node's `shouldUpgradeCallback`: only WebSocket upgrades leave the HTTP request path. */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  const upgrade = req.headers.upgrade;
  return typeof upgrade === 'string' && upgrade.toLowerCase() === 'websocket' && req.method === 'GET';
}

/**
 * The `upgrade` listener of a listener's HTTP server. An upgraded connection counts as in flight
 * until it closes, so a drain waits for its tunnel (up to the drain timeout, when the listener cuts
 * it) as it waits for a request.
 */
export function handleUpgrade(pipeline: Pipeline, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  if (!socket.destroyed) {
    const host = pipeline.host;
    host.requestStarted();
    socket.once('close', () => host.requestFinished());
  }
  pipeline.upgrade(req, socket, head);
}

function headBlock(statusCode: number, headers: IncomingHttpHeaders): string {
  let out = `HTTP/1.1 ${statusCode} ${STATUS_CODES[statusCode] ?? ''}\r\n`;
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) out += `${name}: ${v}\r\n`;
    else out += `${name}: ${value}\r\n`;
  }
  return `${out}\r\n`;
}

function destroyOnError(this: Duplex): void {
  this.destroy();
}

/** The client side of a WebSocket handshake: its socket, and its answer while it is not a 101. */
export class Tunnel {
  readonly socket: Duplex;
  /** Bytes the client sent after the handshake head: the upstream gets them once the tunnel is up. */
  readonly head: Buffer;
  /** Writes a refusal, or an upstream's answer other than 101, and then closes the connection. */
  readonly res: ServerResponse;
  /** The upstream answered 101 and the two sockets are joined. */
  open = false;
  /** How the handshake's last attempt ended when the upstream exchange failed or the client left. */
  failure: AttemptOutcome | undefined = undefined;
  readonly #relayDrain: () => void;

  constructor(res: ServerResponse, socket: Duplex, head: Buffer) {
    this.res = res;
    this.socket = socket;
    this.head = head;
    // The HTTP server's own drain relay left with the upgrade; a relayed body needs one.
    this.#relayDrain = () => {
      if (res.writableNeedDrain) res.emit('drain');
    };
    socket.on('drain', this.#relayDrain);
  }

  /**
   * The upstream answered 101: write its head to the client, with the gateway's own headers
   * (`extra`, [name, value, ...]: rate limit fields), and join the sockets.
   */
  join(
    upstream: Duplex,
    statusCode: number,
    headers: IncomingHttpHeaders,
    requestId: string,
    extra: readonly string[] | undefined,
  ): void {
    const client = this.socket;
    this.res.detachSocket(client as Socket);
    client.removeListener('drain', this.#relayDrain);
    const connection = headers.connection;
    const upgrade = headers.upgrade;
    cleanResponseHeaders(headers);
    headers.connection = typeof connection === 'string' ? connection : 'Upgrade';
    headers.upgrade = typeof upgrade === 'string' ? upgrade : 'websocket';
    headers['x-request-id'] = requestId;
    if (extra !== undefined)
      for (let i = 0; i < extra.length; i += 2) {
        const name = extra[i]!;
        const own = headers[name];
        headers[name] = typeof own === 'string' ? `${own}, ${extra[i + 1]}` : extra[i + 1];
      }
    client.write(headBlock(statusCode, headers));
    if (this.head.length > 0) upstream.write(this.head);
    upstream.on('error', destroyOnError);
    upstream.on('close', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.pipe(client);
    client.pipe(upstream);
    this.open = true;
  }
}

function closeAfterAnswer(this: ServerResponse): void {
  (this.socket as Socket | null)?.destroySoon();
}

/**
 * The tunnel of an upgrade request, with a response object bound to its socket; undefined (the
 * socket destroyed) when the connection still owes an earlier pipelined response, which the
 * handshake's answer must not interleave with.
 */
export function acceptUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Tunnel | undefined {
  // The HTTP server's socket listeners left with the upgrade; an error must not go unhandled.
  socket.on('error', destroyOnError);
  const res = new ServerResponse(req);
  // Whatever is answered instead of a 101 closes the connection: the bytes after the handshake
  // are not HTTP.
  res.shouldKeepAlive = false;
  try {
    res.assignSocket(socket as Socket);
  } catch {
    socket.destroy();
    return undefined;
  }
  res.once('finish', closeAfterAnswer);
  return new Tunnel(res, socket, head);
}

/** What a handshake's attempt reports besides what any attempt does. */
export interface TunnelObserver extends AttemptObserver {
  /** The upstream answered 101 and the tunnel is up. */
  tunnelOpened(ctx: RequestContext): void;
}

/**
 * One attempt of a WebSocket handshake. An answer other than 101 is relayed as a response
 * (ResponseForwarder: retry on status, timeouts, backpressure); a 101 hands the connection over.
 */
export class TunnelForwarder extends ResponseForwarder {
  readonly #tunnels: TunnelObserver;

  constructor(
    ctx: RequestContext,
    endpoint: Endpoint,
    observer: TunnelObserver,
    span: ResponseForwarder['span'],
    lifecycle: { readonly draining: boolean },
  ) {
    super(ctx, endpoint, observer, span, lifecycle);
    this.#tunnels = observer;
  }

  onRequestUpgrade(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
    upstream: Duplex,
  ): void {
    if (!this.settle()) {
      upstream.destroy();
      return;
    }
    const { ctx } = this;
    const tunnel = ctx.tunnel!;
    ctx.upstreamStatus = statusCode;
    ctx.headAt = performance.now();
    if (tunnel.socket.destroyed) {
      upstream.destroy();
      if (this.span) endClientSpan(this.span, statusCode, 'CLIENT_CLOSED', 'client_abort');
      this.observer.attemptFinished(ctx, this.endpoint, 'client_abort', statusCode);
      this.observer.upstreamFailed(ctx, new GatewayError('CLIENT_CLOSED'), this, 'client_abort');
      return;
    }
    tunnel.join(upstream, statusCode, headers, ctx.requestId, ctx.responseHeaders);
    ctx.res.statusCode = statusCode;
    if (this.span) endClientSpan(this.span, statusCode, undefined);
    this.observer.attemptFinished(ctx, this.endpoint, 'success', statusCode);
    this.#tunnels.tunnelOpened(ctx);
  }
}

/**
 * An open tunnel keeps the bulkhead slot its handshake was admitted with until it closes: each
 * one is a connection its upstream serves for as long as it lasts.
 */
export function holdAdmission(tunnel: Tunnel, cluster: Cluster, breakerTicket: number): void {
  const held = { breakerTicket };
  if (tunnel.socket.destroyed) cluster.release(held);
  else tunnel.socket.once('close', () => cluster.release(held));
}

/** The `outcome` label of peregrine_websocket_upgrades_total for a finished handshake. */
export function upgradeOutcome(ctx: RequestContext, tunnel: Tunnel): WebSocketOutcome {
  if (tunnel.open) return 'success';
  const failure = tunnel.failure;
  if (failure !== undefined && failure !== 'success') return failure;
  if (ctx.upstreamStatus !== 0 && ctx.code === undefined) return 'rejected';
  return ctx.code === 'CLIENT_CLOSED' ? 'client_abort' : 'refused';
}
