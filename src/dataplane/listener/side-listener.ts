/**
 * A listener for a control surface beside the data plane (the admin API, the registration API):
 * its own address, strict HTTP/1.1, and either plain HTTP or TLS with the same certificate
 * handling as data-plane listeners (files validated at start, hot reload, SIGHUP) and mTLS: with
 * `clientAuth`, the identity of a client whose chain verified is attached to its connection
 * (tls/peer-identity.ts); a client that presents a certificate that does not verify is refused, never
 * treated as anonymous.
 */
import type { RequestListener, Server, ServerOptions } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { createServer as createHttpServer } from '../../node-http.ts';
import type { Telemetry } from '../../telemetry/telemetry.ts';
import { type ListenerCertificateStatus, ListenerCertificates } from '../../tls/listener-certificates.ts';
import { attachPeerIdentity } from '../../tls/peer-identity.ts';
import { handshakeFailureReason, isClientCertReason, verifyErrorReason } from '../../tls/reasons.ts';
import type { TlsConfig } from '../../tls/schema.ts';
import { plainAddress } from '../forward/trusted-proxies.ts';
import { listenOn } from './listener.ts';

export interface SideListenerConfig {
  readonly address: string;
  readonly tls?: TlsConfig | undefined;
  /** Time allowed for the request head; the whole request must arrive within `requestTimeout`. */
  readonly headersTimeout: number;
  readonly requestTimeout: number;
  readonly keepAliveTimeout: number;
}

export class SideListener {
  /** The name in logs and TLS metrics (`listener` label). */
  readonly name: string;
  readonly config: SideListenerConfig;
  readonly server: Server;
  readonly certificates: ListenerCertificates | undefined;
  readonly #telemetry: Telemetry;
  readonly #sockets = new Set<Socket>();
  #address: AddressInfo | undefined;
  #closing: Promise<void> | undefined;

  /** Loads the certificate files when TLS is configured; throws CertificateLoadError when they are unusable. */
  constructor(name: string, config: SideListenerConfig, handler: RequestListener, telemetry: Telemetry) {
    this.name = name;
    this.config = config;
    this.#telemetry = telemetry;
    const http: ServerOptions = {
      insecureHTTPParser: false,
      joinDuplicateHeaders: false,
      maxHeaderSize: 16 * 1024,
      headersTimeout: config.headersTimeout,
      requestTimeout: config.requestTimeout,
      keepAliveTimeout: config.keepAliveTimeout,
    };
    const tls = config.tls;
    if (tls === undefined) {
      this.certificates = undefined;
      this.server = createHttpServer(http, handler);
    } else {
      const { logger, metrics } = telemetry;
      this.certificates = new ListenerCertificates(name, tls, { logger, metrics });
      this.server = createHttpsServer(
        {
          ...http,
          ...this.certificates.secureContextOptions,
          requestCert: tls.clientAuth !== 'none',
          rejectUnauthorized: tls.clientAuth === 'required',
          handshakeTimeout: tls.handshakeTimeout,
        },
        handler,
      );
      this.server.prependListener('secureConnection', this.#onSecureConnection);
      this.server.on('tlsClientError', this.#onTlsClientError);
    }
    this.server.on('connection', (socket: Socket) => {
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
    });
  }

  #onSecureConnection = (socket: TLSSocket): void => {
    socket.disableRenegotiation();
    if (this.config.tls?.clientAuth === 'none') return;
    if (socket.authorized) {
      attachPeerIdentity(socket, this.certificates?.serverUri ?? this.name);
      return;
    }
    if (socket.getPeerX509Certificate() === undefined) return;
    // `optional`: a certificate was presented and did not verify. Refused, never anonymous.
    const reason = verifyErrorReason(socket.authorizationError);
    const { metrics, logger } = this.#telemetry;
    metrics.recordClientCertVerificationFailure(this.name, reason);
    logger.debug(
      { listener: this.name, reason, clientAddress: plainAddress(socket.remoteAddress) },
      'client certificate did not verify; connection refused',
    );
    socket.destroy();
  };

  #onTlsClientError = (err: NodeJS.ErrnoException, socket: TLSSocket): void => {
    const reason = handshakeFailureReason(err, socket);
    const { metrics } = this.#telemetry;
    metrics.recordTlsHandshakeFailure(this.name, reason);
    if (isClientCertReason(reason)) metrics.recordClientCertVerificationFailure(this.name, reason);
  };

  async listen(): Promise<AddressInfo> {
    this.#address = await listenOn(this.server, this.config.address);
    this.certificates?.watch((options) =>
      (this.server as ReturnType<typeof createHttpsServer>).setSecureContext(options),
    );
    return this.#address;
  }

  get listening(): boolean {
    return this.#address !== undefined;
  }

  get address(): AddressInfo {
    if (!this.#address) throw new Error(`${this.name} listener not listening`);
    return this.#address;
  }

  certificateStatus(): ListenerCertificateStatus | undefined {
    return this.certificates?.status();
  }

  reloadCertificates(trigger: string): boolean {
    return this.certificates?.reload(trigger) ?? false;
  }

  /**
   * Stop accepting, close idle connections, and cut whatever is still open after `graceMs` (these
   * surfaces serve short requests). Safe to call twice.
   */
  close(graceMs = 1000): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      this.certificates?.close();
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
      const cut = () => {
        for (const s of this.#sockets) s.destroy();
      };
      if (graceMs <= 0) cut();
      else setTimeout(cut, graceMs).unref();
      if (!this.server.listening) resolve();
    });
    return this.#closing;
  }
}
