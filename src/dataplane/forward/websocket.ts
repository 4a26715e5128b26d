/**
 * WebSocket upgrades, proxied end to end: the handshake goes to the upstream through the same
 * route table and header hygiene as any request; once the upstream answers 101 the two sockets are
 * joined byte for byte. Anything other than 101 is relayed to the client as a normal response.
 */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Dispatcher } from 'undici';
import { asGatewayError, GatewayError } from '../../errors.ts';
import type { WebSocketOutcome } from '../../telemetry/metrics.ts';
import type { Pipeline } from '../pipeline.ts';
import { writeRawProblem } from '../respond.ts';
import { normalizePath } from '../routing/path-normalize.ts';
import { buildUpstreamHeaders, cleanResponseHeaders } from './headers.ts';
import { plainAddress } from './trusted-proxies.ts';
import { classifyUpstreamError } from './upstream-errors.ts';

/** Node's `shouldUpgradeCallback`: only WebSocket upgrades leave the HTTP request path. */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  const upgrade = req.headers.upgrade;
  return typeof upgrade === 'string' && upgrade.toLowerCase() === 'websocket' && req.method === 'GET';
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

function destroyBoth(a: Duplex, b: Duplex): void {
  a.destroy();
  b.destroy();
}

class UpgradeHandler implements Dispatcher.DispatchHandler {
  readonly client: Duplex;
  readonly head: Buffer;
  readonly onDone: (outcome: WebSocketOutcome, status: number) => void;
  #done = false;

  constructor(client: Duplex, head: Buffer, onDone: (outcome: WebSocketOutcome, status: number) => void) {
    this.client = client;
    this.head = head;
    this.onDone = onDone;
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    // A client that leaves during the handshake cancels it.
    this.client.once('close', () => {
      if (!this.#done) controller.abort(new GatewayError('CLIENT_CLOSED'));
    });
  }

  onRequestUpgrade(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
    upstream: Duplex,
  ): void {
    this.#done = true;
    const client = this.client;
    if (client.destroyed) {
      upstream.destroy();
      this.onDone('client_abort', statusCode);
      return;
    }
    const connection = headers.connection;
    const upgrade = headers.upgrade;
    cleanResponseHeaders(headers);
    headers.connection = typeof connection === 'string' ? connection : 'Upgrade';
    headers.upgrade = typeof upgrade === 'string' ? upgrade : 'websocket';
    client.write(headBlock(statusCode, headers));
    if (this.head.length > 0) upstream.write(this.head);
    upstream.on('error', () => destroyBoth(client, upstream));
    client.on('error', () => destroyBoth(client, upstream));
    upstream.on('close', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.pipe(client);
    client.pipe(upstream);
    this.onDone('success', statusCode);
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
  ): void {
    cleanResponseHeaders(headers);
    headers.connection = 'close';
    if (!this.client.destroyed) this.client.write(headBlock(statusCode, headers));
    this.statusCode = statusCode;
  }

  statusCode = 0;

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.client.destroyed) this.client.write(chunk);
  }

  onResponseEnd(): void {
    this.#done = true;
    this.client.end();
    this.onDone('rejected', this.statusCode);
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    if (this.#done) return;
    this.#done = true;
    const { error: gwError, outcome } = classifyUpstreamError(error);
    if (this.statusCode === 0) writeRawProblem(this.client, gwError.code);
    else this.client.destroy();
    this.onDone(outcome, this.statusCode);
  }
}

/** The `upgrade` listener of a listener's HTTP server. */
export function handleUpgrade(pipeline: Pipeline, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  socket.on('error', () => socket.destroy());
  const metrics = pipeline.telemetry.metrics;
  let routeName = '_none';
  try {
    const target = normalizePath(req.url ?? '/');
    if ('error' in target) throw new GatewayError('BAD_REQUEST', `invalid request target (${target.error})`);
    const snapshot = pipeline.host.currentSnapshot();
    const match = snapshot.routes.match(req.headers.host, target.path, 'GET', req.headers);
    if (!match) throw new GatewayError('ROUTE_NOT_FOUND');
    const route = match.route;
    routeName = route.name;
    const cluster = snapshot.clusters.get(route.upstream);
    const endpoint = cluster?.balancer.pick();
    if (!cluster || !endpoint) throw new GatewayError('NO_HEALTHY_ENDPOINT');
    const peer = plainAddress(req.socket.remoteAddress);
    const headers = buildUpstreamHeaders(req.rawHeaders, {
      trusted: pipeline.listener.trust(peer),
      peerAddress: peer,
      proto: pipeline.listener.proto,
      upstreamHost: route.hostRewrite ?? (route.preserveHost ? undefined : endpoint.host),
      requestId: typeof req.headers['x-request-id'] === 'string' ? req.headers['x-request-id'] : crypto.randomUUID(),
    });
    const path = route.rewritePath(target.path);
    const name = routeName;
    endpoint.pool.dispatch(
      { method: 'GET', path: path + target.query, headers, upgrade: 'websocket', body: null },
      new UpgradeHandler(socket, head, (outcome) => metrics.recordWebSocketUpgrade(name, outcome)),
    );
  } catch (err) {
    const error = asGatewayError(err);
    metrics.recordWebSocketUpgrade(routeName, 'refused');
    writeRawProblem(socket, error.code);
  }
}
