/**
 * A TLS listener: HTTP/2 and HTTP/1.1 on one port, chosen by ALPN (`http2.createSecureServer` with
 * `allowHTTP1`), both served by the same pipeline to HTTP/1.1 upstreams. h2c is never served: on a
 * plain listener nothing speaks HTTP/2, and an `Upgrade: h2c` request is an ordinary request whose
 * Upgrade header is dropped.
 *
 * mTLS: with `clientAuth` set, a client certificate is requested and verified against `clientCa`.
 * `required` refuses the handshake without a valid one. `optional` lets a client without a
 * certificate in (anonymous) but refuses one that presents a certificate that does not verify:
 * Node would accept it unverified, and a peer that believes it authenticated should not silently
 * become anonymous. The identity of a verified peer is computed once per connection and cached on
 * the socket (peer-identity.ts).
 */
import type { ServerOptions as HttpServerOptions, IncomingMessage } from 'node:http';
import {
  createSecureServer,
  type Http2SecureServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type SecureServerOptions,
  type ServerHttp2Session,
} from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { SecureContext, TLSSocket } from 'node:tls';
import type { ListenerConfig } from '../../config/schema.ts';
import { GatewayError } from '../../errors.ts';
import { ServerResponse } from '../../node-http.ts';
import { type ListenerCertificateStatus, ListenerCertificates } from '../../tls/listener-certificates.ts';
import { attachPeerIdentity, kPeerIdentity } from '../../tls/peer-identity.ts';
import { handshakeFailureReason, isClientCertReason, verifyErrorReason } from '../../tls/reasons.ts';
import type { TlsConfig } from '../../tls/schema.ts';
import { plainAddress } from '../forward/trusted-proxies.ts';
import { handleUpgrade, isWebSocketUpgrade } from '../forward/websocket.ts';
import { type DataplaneHost, Pipeline } from '../pipeline.ts';
import { answerClientError, countRefusal } from './http-listener.ts';
import { type FieldCheckHost, HPACK_TABLE_SIZE } from './http2-field-check.ts';
import { Http2FieldTap } from './http2-field-tap.ts';
import {
  type Http2CloseReason,
  isMalformedStream,
  LIVENESS_TICKS,
  SessionGuard,
  type SessionGuardHost,
} from './http2-session-guard.ts';
import { type Listener, listenerInfo, listenOn, strictHttp1Options } from './listener.ts';

/** The node:http options the HTTP/1.1 fallback of an HTTP/2 secure server honours (not in its types). */
type Http1FallbackOptions = Pick<
  HttpServerOptions,
  | 'insecureHTTPParser'
  | 'joinDuplicateHeaders'
  | 'requireHostHeader'
  | 'maxHeaderSize'
  | 'headersTimeout'
  | 'requestTimeout'
  | 'keepAliveTimeout'
  | 'connectionsCheckingInterval'
  | 'shouldUpgradeCallback'
>;

type CompatHandler = (req: Http2ServerRequest, res: Http2ServerResponse) => void;

/** What Node's socket proxy of a session lets the listener set on the socket the session runs on. */
type SessionSocket = { _peername?: { address?: string; family?: string; port?: number } } & Record<
  symbol,
  unknown
>;

const MALFORMED = new GatewayError('BAD_REQUEST', 'malformed HTTP/2 request header (RFC 9113 §8.2)');

export class TlsListener implements Listener {
  readonly config: ListenerConfig;
  readonly tls: TlsConfig;
  readonly server: Http2SecureServer;
  readonly pipeline: Pipeline;
  readonly certificates: ListenerCertificates;
  readonly #host: DataplaneHost;
  readonly #sockets = new Set<Socket>();
  readonly #sessions = new Map<ServerHttp2Session, SessionGuard>();
  readonly #guardHost: SessionGuardHost;
  #closed = false;
  /** Node's 'secureConnection' listener: builds the HTTP/2 session, or hands over to HTTP/1.1. */
  readonly #handOver: (socket: Duplex) => void;
  /** The connection being handed over to HTTP/2, for the session Node builds on it (same emit). */
  #handingOver: Http2FieldTap | undefined = undefined;
  /** Runs SessionGuard.tick for every session while there are sessions (unresponsiveTimeout). */
  #liveness: NodeJS.Timeout | undefined = undefined;

  /** Loads the certificate files; throws CertificateLoadError when they are not a usable set. */
  constructor(config: ListenerConfig, host: DataplaneHost) {
    const tls = config.tls;
    if (!tls) throw new Error(`listener ${config.name} has no tls section`);
    this.config = config;
    this.tls = tls;
    this.#host = host;
    const { logger, metrics } = host.telemetry;
    this.certificates = new ListenerCertificates(config.name, tls, { logger, metrics });
    this.pipeline = new Pipeline(listenerInfo(config, 'https'), host);
    const { limits, http2 } = config;
    const offer = http2.enabled ? ['h2', 'http/1.1'] : ['http/1.1'];
    const options: SecureServerOptions & Http1FallbackOptions = {
      ...this.certificates.secureContextOptions,
      // tls.certificates (static: the list cannot change without a restart, only the files'
      // contents): the context whose DNS SANs cover the client's SNI name; undefined keeps the
      // default certificate. Without such certificates no callback, so no detour per handshake.
      ...(tls.certificates.length > 0
        ? {
            SNICallback: (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) =>
              cb(null, this.certificates.contextFor(servername)),
          }
        : {}),
      allowHTTP1: true,
      // TCP_NODELAY on every accepted socket, as node:http and node:https set by default and
      // node:http2 does not: without it a write that follows one not yet acknowledged (HTTP/2
      // frames, the chunks of a streamed body, a TLS record after the handshake's last flight)
      // waits for the peer's delayed ACK, 40 ms or more on Linux.
      noDelay: true,
      // Server preference order; a client offering only protocols we do not speak is refused
      // (no_application_protocol). A client sending no ALPN at all gets HTTP/1.1.
      ALPNCallback: ({ protocols }) => offer.find((p) => protocols.includes(p)),
      requestCert: tls.clientAuth !== 'none',
      rejectUnauthorized: tls.clientAuth === 'required',
      handshakeTimeout: tls.handshakeTimeout,
      // HTTP/1.1 over TLS: the same strict parser and limits as a plain listener.
      // (Its shouldUpgradeCallback is ignored by the fallback in Node 24.21; see #onUpgrade.)
      ...strictHttp1Options(limits),
      // HTTP/2 limits (docs/security.md). The header list limit is the listener's maxHeaderSize.
      settings: {
        // The field check decodes the client's header blocks with this table (http2-field-check.ts).
        headerTableSize: HPACK_TABLE_SIZE,
        maxConcurrentStreams: http2.maxConcurrentStreams,
        maxHeaderListSize: limits.maxHeaderSize,
        enableConnectProtocol: false,
      },
      maxSessionMemory: http2.maxSessionMemory,
      maxSessionInvalidFrames: http2.maxSessionInvalidFrames,
      maxSessionRejectedStreams: http2.maxSessionRejectedStreams,
      maxOutstandingPings: http2.maxOutstandingPings,
      maxSettings: http2.maxSettings,
    };
    // The pipeline reads the part of IncomingMessage/ServerResponse that Node's HTTP/2
    // compatibility API also has (headers, rawHeaders, method, url, socket, streaming body,
    // writeHead/write/end/destroy, headersSent, writableFinished, 'close' and 'drain'); the few
    // HTTP/2 differences are handled there (pipeline.ts, headers.ts, forwarder.ts).
    this.server = createSecureServer(options, this.#onRequest as unknown as CompatHandler);
    // Node's own listener is called by ours, once the peer is accepted, with the TLS socket (HTTP/1.1)
    // or the field tap in front of it (HTTP/2).
    const builders = this.server.listeners('secureConnection');
    if (builders.length !== 1) throw new Error('unexpected secureConnection listeners on the HTTP/2 server');
    this.#handOver = builders[0] as (socket: Duplex) => void;
    this.server.removeAllListeners('secureConnection');
    this.#guardHost = {
      listener: config.name,
      limits: http2,
      recordClosed: (reason: Http2CloseReason) => metrics.recordHttp2SessionClosed(config.name, reason),
      forget: (session: ServerHttp2Session) => {
        this.#sessions.delete(session);
        if (this.#sessions.size === 0) this.#stopLiveness();
      },
    };
    this.server.on('connection', this.#onConnection);
    this.server.on('secureConnection', this.#onSecureConnection);
    this.server.on('tlsClientError', this.#onTlsClientError);
    this.server.on('session', this.#onSession);
    this.server.on('clientError', this.#onClientError);
    this.server.on('upgrade', this.#onUpgrade);
  }

  #onConnection = (socket: Socket): void => {
    const metrics = this.#host.telemetry.metrics;
    metrics.connectionOpened(this.config.name);
    this.#sockets.add(socket);
    socket.once('close', () => {
      metrics.connectionClosed(this.config.name);
      this.#sockets.delete(socket);
    });
  };

  #onSecureConnection = (socket: TLSSocket): void => {
    const metrics = this.#host.telemetry.metrics;
    // TLS 1.2 renegotiation could swap the peer certificate under a cached identity.
    socket.disableRenegotiation();
    if (this.tls.clientAuth !== 'none') {
      if (socket.authorized) {
        attachPeerIdentity(socket, this.certificates.serverUri ?? this.config.name);
      } else if (socket.getPeerX509Certificate() !== undefined) {
        // `optional`: a certificate was presented and did not verify. Never authenticated; refused.
        const reason = verifyErrorReason(socket.authorizationError);
        metrics.recordClientCertVerificationFailure(this.config.name, reason);
        metrics.recordTlsHandshakeFailure(this.config.name, reason);
        this.#host.telemetry.logger.debug(
          { listener: this.config.name, reason, clientAddress: plainAddress(socket.remoteAddress) },
          'client certificate did not verify; connection refused',
        );
        socket.destroy();
        return;
      }
    }
    metrics.recordTlsHandshake(
      this.config.name,
      socket.getProtocol() ?? 'unknown',
      socket.alpnProtocol || 'none',
    );
    if (socket.alpnProtocol !== 'h2') {
      this.#handOver.call(this.server, socket);
      return;
    }
    const tap = new Http2FieldTap(socket, this.#fieldCheckHost(socket));
    this.#handingOver = tap;
    try {
      this.#handOver.call(this.server, tap);
    } finally {
      this.#handingOver = undefined;
    }
  };

  /** Where the field check of one HTTP/2 connection reports. */
  #fieldCheckHost(socket: TLSSocket): FieldCheckHost {
    const logger = this.#host.telemetry.logger;
    const listener = this.config.name;
    return {
      malformed: (streamId: number, problem: string) => {
        // Counted where it ends: by the pipeline when nghttp2 hands it over, else by `refused`.
        logger.debug(
          { listener, streamId, problem, clientAddress: plainAddress(socket.remoteAddress) },
          'malformed HTTP/2 request header; request refused',
        );
      },
      refused: () => {
        // nghttp2 reset the stream itself (or the connection ended first): no answer to give,
        // but counted, logged and traced like a parser refusal.
        countRefusal(listener, this.#host, 'BAD_REQUEST', socket.remoteAddress);
      },
      lostSync: (problem: string) => {
        logger.debug(
          { listener, problem, clientAddress: plainAddress(socket.remoteAddress) },
          'HTTP/2 frames the field check cannot follow; connection closed',
        );
      },
    };
  }

  #onTlsClientError = (err: NodeJS.ErrnoException, socket: TLSSocket): void => {
    const metrics = this.#host.telemetry.metrics;
    const reason = handshakeFailureReason(err, socket);
    metrics.recordTlsHandshakeFailure(this.config.name, reason);
    if (isClientCertReason(reason)) metrics.recordClientCertVerificationFailure(this.config.name, reason);
    this.#host.telemetry.logger.debug(
      {
        listener: this.config.name,
        reason,
        code: err.code,
        clientAddress: plainAddress(socket?.remoteAddress),
      },
      'TLS handshake failed',
    );
    // Node leaves the socket open after some handshake failures, the handshake timeout among them
    // (a silent client kept its descriptor in CLOSE-WAIT for good): whatever the cause, it ends here.
    socket?.destroy();
  };

  #onSession = (session: ServerHttp2Session): void => {
    const tap = this.#handingOver;
    if (tap === undefined) {
      // Node emits 'session' from within the hand-over in #onSecureConnection; anything else is a bug.
      session.destroy();
      return;
    }
    const socket = tap.socket;
    // The session runs on the tap, which Node wraps in a socket of its own without the peer's
    // address or identity; requests read both from it through Node's proxy, whose writes land there.
    const onTap = session.socket as unknown as SessionSocket;
    onTap._peername = { address: socket.remoteAddress, family: socket.remoteFamily, port: socket.remotePort };
    const identity = (socket as unknown as SessionSocket)[kPeerIdentity];
    if (identity !== undefined) onTap[kPeerIdentity] = identity;
    const guard = new SessionGuard(session, tap, this.#guardHost);
    this.#sessions.set(session, guard);
    if (this.#closed) guard.drain();
    const every = this.config.http2.unresponsiveTimeout / LIVENESS_TICKS;
    if (every > 0 && this.#liveness === undefined) {
      this.#liveness = setInterval(this.#tickSessions, every);
      this.#liveness.unref();
    }
  };

  /** HTTP/2 requests whose header block was malformed are refused by the pipeline, before routing. */
  #onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const malformed =
      req.httpVersionMajor === 2 && isMalformedStream((req as unknown as Http2ServerRequest).stream);
    this.pipeline.handle(req, res, malformed ? MALFORMED : undefined);
  };

  #tickSessions = (): void => {
    for (const guard of this.#sessions.values()) guard.tick();
  };

  #stopLiveness(): void {
    if (this.#liveness !== undefined) clearInterval(this.#liveness);
    this.#liveness = undefined;
  }

  #onClientError = (err: NodeJS.ErrnoException, socket: Duplex): void => {
    answerClientError(this.config.name, this.#host, err, socket, this.config.reasonHeader);
  };

  #onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    if (isWebSocketUpgrade(req)) {
      handleUpgrade(this.pipeline, req, socket, head);
      return;
    }
    // The HTTP/1.1 fallback of Node's HTTP/2 server ignores shouldUpgradeCallback and brings every
    // Upgrade request (h2c, ...) here (Node 24.21). Serve it as the plain request it also is, as a
    // plain listener does, then close: its parser is detached, so nothing more can be read.
    socket.on('error', () => socket.destroy());
    const cl = req.headers['content-length'];
    if (
      (cl !== undefined && cl !== '0') ||
      req.headers['transfer-encoding'] !== undefined ||
      head.length > 0
    ) {
      const err: NodeJS.ErrnoException = new Error('Upgrade request with a body');
      err.code = 'PEREGRINE_UPGRADE_WITH_BODY';
      answerClientError(this.config.name, this.#host, err, socket, this.config.reasonHeader);
      return;
    }
    const res = new ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket as Socket);
    res.once('finish', () => socket.end());
    this.pipeline.handle(req, res);
  };

  async listen(): Promise<AddressInfo> {
    const address = await listenOn(this.server, this.config.address);
    this.certificates.watch((options) => this.server.setSecureContext(options));
    return address;
  }

  /**
   * Stop accepting. HTTP/2 sessions get GOAWAY (open streams finish), idle HTTP/1.1 connections
   * close, and responses still running on HTTP/1.1 carry `Connection: close`.
   */
  stopAccepting(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.certificates.close();
    for (const guard of this.#sessions.values()) guard.drain();
    this.server.close();
  }

  destroyConnections(): void {
    this.#stopLiveness();
    for (const guard of [...this.#sessions.values()]) guard.destroy();
    for (const socket of this.#sockets) socket.destroy();
  }

  certificateStatus(): ListenerCertificateStatus {
    return this.certificates.status();
  }

  /**
   * Re-read and check the certificate files now (e.g. on SIGHUP), whether or not they are watched,
   * exactly as a file change would: a good set is swapped in for new handshakes; a bad one is
   * logged, counted and leaves the current certificate serving. Returns whether it swapped.
   */
  reloadCertificates(trigger: string): boolean {
    return this.certificates.reload(trigger);
  }
}
