import { randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ListenerConfig } from '../../config/schema.ts';
import type { ErrorCode } from '../../errors.ts';
import { accessRecord } from '../../telemetry/access-log.ts';
import { endServerSpan, UNKNOWN_METHOD } from '../../telemetry/tracing.ts';
import { plainAddress } from '../forward/trusted-proxies.ts';
import { handleUpgrade } from '../forward/websocket.ts';
import { type DataplaneHost, deferClientError, Pipeline } from '../pipeline.ts';
import { rawProblem, writeRawProblem } from '../respond.ts';
import { listenerInfo, listenOn, strictHttp1Options } from './listener.ts';

/** Node's parser errors → the answer the gateway gives before closing the connection. */
function clientErrorCode(code: string | undefined): ErrorCode {
  if (code === 'HPE_HEADER_OVERFLOW') return 'HEADERS_TOO_LARGE';
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT' || code === 'ERR_HTTP_HEADERS_TIMEOUT') return 'REQUEST_TIMEOUT';
  return 'BAD_REQUEST';
}

/** A parser error has no headers to read a trace parent or a request id from. */
const NO_HEADERS: IncomingHttpHeaders = {};

/**
 * The `clientError` listener of a listener's HTTP/1.1 server (TLS listeners too): answer Node's
 * parser errors with problem+json and close, counted like any request. There is no request, but
 * the refusal gets what every request gets: a request id, a SERVER span (sampled like any root)
 * whose trace id the body, the access line and the latency exemplar share.
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
  const { metrics, accessLog, tracing } = host.telemetry;
  const clientAddress = plainAddress((socket as Socket).remoteAddress);
  const span = tracing.startServerSpan(UNKNOWN_METHOD, NO_HEADERS, {
    'http.request.method': UNKNOWN_METHOD,
    'client.address': clientAddress,
  });
  const { traceId, spanId, sampled } = tracing.traceIds(span);
  const requestId = randomUUID();
  const problem = rawProblem(code, { traceId, requestId });
  // A deferred answer is counted now: it goes out when the responses before it have.
  const bytes = deferClientError(socket, problem)
    ? problem.bytes
    : writeRawProblem(socket, problem, reasonHeader);
  // Counted like any request (no route, method unknown) so rate and error panels include them.
  const status = problem.status;
  metrics.recordRequest(listener, undefined, 'OTHER', status, 0, sampled ? traceId : undefined);
  metrics.recordBytes(undefined, 0, bytes);
  metrics.recordLocalResponse(undefined, code);
  endServerSpan(span, status, code);
  if (accessLog.enabled)
    accessLog.log(
      accessRecord(listener, undefined, undefined, undefined, '-', status, 0, undefined, {
        path: '-',
        requestId,
        clientAddress,
        code,
        attempts: 0,
        identity: undefined,
        traceId,
        spanId,
        responseBytes: bytes,
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
