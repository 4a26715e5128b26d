import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ListenerConfig } from '../../config/schema.ts';
import { ERROR_CODES, type ErrorCode } from '../../errors.ts';
import { createServer } from '../../node-http.ts';
import { accessRecord } from '../../telemetry/access-log.ts';
import { endServerSpan, UNKNOWN_METHOD } from '../../telemetry/tracing.ts';
import { plainAddress } from '../forward/trusted-proxies.ts';
import { handleUpgrade } from '../forward/websocket.ts';
import { type DataplaneHost, deferClientError, Pipeline, requestBodyFailed } from '../pipeline.ts';
import { type RawProblem, rawProblem, writeRawProblem } from '../respond.ts';
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
 * parser errors with problem+json and close, counted like any request (countRefusal).
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
  countRefusal(listener, host, code, (socket as Socket).remoteAddress, (problem) =>
    // A deferred answer is counted now: it goes out when the responses before it have.
    deferClientError(socket, problem) ? problem.bytes : writeRawProblem(socket, problem, reasonHeader),
  );
}

/**
 * A request refused before it reached the pipeline (a parser error, a malformed HTTP/2 header
 * block nghttp2 reset): counted like any request (no route, method unknown) so rate and error
 * panels include them, and given an access log line. There is no request, but the refusal gets
 * what every request gets: a request id, a SERVER span (sampled like any root) whose trace id the
 * body, the access line and the latency exemplar share. `answer` writes the problem+json (built
 * with those ids) and returns its body bytes; without it nothing is written (a reset stream).
 */
export function countRefusal(
  listener: string,
  host: DataplaneHost,
  code: ErrorCode,
  remoteAddress: string | undefined,
  answer?: (problem: RawProblem) => number,
): void {
  const { metrics, accessLog, tracing, decisions } = host.telemetry;
  const clientAddress = plainAddress(remoteAddress);
  const span = tracing.startServerSpan(UNKNOWN_METHOD, NO_HEADERS, {
    'http.request.method': UNKNOWN_METHOD,
    'client.address': clientAddress,
  });
  const { traceId, spanId, sampled } = tracing.traceIds(span);
  const requestId = randomUUID();
  const status = ERROR_CODES[code].status;
  const bytes = answer === undefined ? 0 : answer(rawProblem(code, { traceId, requestId }));
  metrics.recordRequest(listener, undefined, 'OTHER', status, 0, sampled ? traceId : undefined);
  metrics.recordBytes(undefined, 0, bytes);
  metrics.recordLocalResponse(undefined, code);
  decisions.record(listener, undefined, undefined, status, code, traceId, sampled, requestId);
  endServerSpan(span, answer === undefined ? undefined : status, code);
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
        sampled,
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
  /** Upgraded connections (WebSocket handshakes and tunnels), which the HTTP server no longer tracks. */
  readonly #upgraded = new Set<Duplex>();
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
    // The HTTP server forgets a connection once it is upgraded: closeAllConnections would miss it.
    this.#upgraded.add(socket);
    socket.once('close', () => this.#upgraded.delete(socket));
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
    for (const socket of this.#upgraded) socket.destroy();
  }
}
