import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ListenerConfig } from '../../config/schema.ts';
import { ERROR_CODES, type ErrorCode } from '../../errors.ts';
import { accessRecord } from '../../telemetry/access-log.ts';
import { plainAddress } from '../forward/trusted-proxies.ts';
import { handleUpgrade } from '../forward/websocket.ts';
import { type DataplaneHost, deferClientError, Pipeline, requestBodyFailed } from '../pipeline.ts';
import { writeRawProblem } from '../respond.ts';
import { listenerInfo, listenOn, strictHttp1Options } from './listener.ts';

/** Node's parser errors → the answer the gateway gives before closing the connection. */
function clientErrorCode(code: string | undefined): ErrorCode {
  if (code === 'HPE_HEADER_OVERFLOW') return 'HEADERS_TOO_LARGE';
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT' || code === 'ERR_HTTP_HEADERS_TIMEOUT') return 'REQUEST_TIMEOUT';
  return 'BAD_REQUEST';
}

/**
 * The `clientError` listener of a listener's HTTP/1.1 server (TLS listeners too): answer Node's
 * parser errors with problem+json and close, counted like any request.
 */
export function answerClientError(
  listener: string,
  host: DataplaneHost,
  err: NodeJS.ErrnoException,
  socket: Duplex,
  reasonHeader: string | false,
): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const code = clientErrorCode(err.code);
  // About the body of a request the pipeline already has: that request answers it.
  if (requestBodyFailed(socket, code, err)) return;
  if (!deferClientError(socket, code)) writeRawProblem(socket, code, undefined, undefined, reasonHeader);
  countRefusal(listener, host, code, (socket as Socket).remoteAddress);
}

/**
 * A request refused before it reached the pipeline (a parser error, a malformed HTTP/2 header
 * block): counted like any request (no route, method unknown) so rate and error panels include
 * them, and given an access log line.
 */
export function countRefusal(
  listener: string,
  host: DataplaneHost,
  code: ErrorCode,
  remoteAddress: string | undefined,
): void {
  const { metrics, accessLog } = host.telemetry;
  const status = ERROR_CODES[code].status;
  metrics.recordRequest(listener, undefined, 'OTHER', status, 0, undefined);
  metrics.recordLocalResponse(undefined, code);
  if (accessLog.enabled)
    accessLog.log(
      accessRecord(listener, undefined, undefined, undefined, '-', status, 0, undefined, {
        path: '-',
        requestId: '',
        clientAddress: plainAddress(remoteAddress),
        code,
        attempts: 0,
        identity: undefined,
      }),
    );
}

/**
 * One data-plane listener: a Node HTTP server with strict parsing and the listener's limits, the
 * pipeline as its request handler, WebSocket upgrades, and connection accounting.
 */
export class HttpListener {
  readonly config: ListenerConfig;
  readonly server: Server;
  readonly pipeline: Pipeline;
  readonly #host: DataplaneHost;
  #closed = false;

  constructor(config: ListenerConfig, host: DataplaneHost) {
    this.config = config;
    this.#host = host;
    this.pipeline = new Pipeline(listenerInfo(config, 'http'), host);
    this.server = createServer(strictHttp1Options(config.limits), this.pipeline.handle);
    this.server.on('clientError', this.#onClientError);
    this.server.on('connection', this.#onConnection);
    this.server.on('upgrade', this.#onUpgrade);
  }

  #onConnection = (socket: Socket): void => {
    const metrics = this.#host.telemetry.metrics;
    metrics.connectionOpened(this.config.name);
    socket.once('close', () => metrics.connectionClosed(this.config.name));
  };

  #onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    handleUpgrade(this.pipeline, req, socket, head);
  };

  #onClientError = (err: NodeJS.ErrnoException, socket: Duplex): void => {
    answerClientError(this.config.name, this.#host, err, socket, this.config.reasonHeader);
  };

  listen(): Promise<AddressInfo> {
    return listenOn(this.server, this.config.address);
  }

  /** Stop accepting; idle keep-alive connections are closed, active ones finish their request. */
  stopAccepting(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.server.close();
    this.server.closeIdleConnections();
  }

  /** Cut whatever is still open (after the drain timeout). */
  destroyConnections(): void {
    this.server.closeAllConnections();
  }
}
