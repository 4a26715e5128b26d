/**
 * The registration API's listener: its own address, never the data plane's or the admin port.
 * Plain HTTP/1.1, or TLS with the same certificate handling as data-plane listeners (files
 * validated at start, hot reload, SIGHUP) and mTLS: with `clientAuth`, the identity of a client
 * whose chain verified is attached to its connection (peer-identity.ts); a client that presents a
 * certificate that does not verify is refused, never treated as anonymous.
 */
import { createServer as createHttpServer, type Server, type ServerOptions } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { plainAddress } from '../dataplane/forward/trusted-proxies.ts';
import { listenOn } from '../dataplane/listener/listener.ts';
import type { Telemetry } from '../telemetry/telemetry.ts';
import { type ListenerCertificateStatus, ListenerCertificates } from '../tls/listener-certificates.ts';
import { attachPeerIdentity } from '../tls/peer-identity.ts';
import { handshakeFailureReason, isClientCertReason, verifyErrorReason } from '../tls/reasons.ts';
import type { RegistryApi } from './api.ts';
import type { RegistryListenerConfig } from './schema.ts';

/** The listener name in logs and TLS metrics. */
export const REGISTRY_LISTENER = 'registry';

export class RegistryServer {
  readonly config: RegistryListenerConfig;
  readonly server: Server;
  readonly certificates: ListenerCertificates | undefined;
  readonly #api: RegistryApi;
  readonly #telemetry: Telemetry;
  readonly #sockets = new Set<Socket>();
  #address: AddressInfo | undefined;
  #closing: Promise<void> | undefined;

  /** Loads the certificate files when TLS is configured; throws CertificateLoadError when they are unusable. */
  constructor(config: RegistryListenerConfig, api: RegistryApi, telemetry: Telemetry) {
    this.config = config;
    this.#api = api;
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
      this.server = createHttpServer(http, api.handle);
    } else {
      const { logger, metrics } = telemetry;
      this.certificates = new ListenerCertificates(REGISTRY_LISTENER, tls, { logger, metrics });
      this.server = createHttpsServer(
        {
          ...http,
          ...this.certificates.secureContextOptions,
          requestCert: tls.clientAuth !== 'none',
          rejectUnauthorized: tls.clientAuth === 'required',
          handshakeTimeout: tls.handshakeTimeout,
        },
        api.handle,
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
      attachPeerIdentity(socket, this.certificates?.serverUri ?? REGISTRY_LISTENER);
      return;
    }
    if (socket.getPeerX509Certificate() === undefined) return;
    // `optional`: a certificate was presented and did not verify. Refused, never anonymous.
    const reason = verifyErrorReason(socket.authorizationError);
    const { metrics, logger } = this.#telemetry;
    metrics.recordClientCertVerificationFailure(REGISTRY_LISTENER, reason);
    logger.debug(
      { listener: REGISTRY_LISTENER, reason, clientAddress: plainAddress(socket.remoteAddress) },
      'client certificate did not verify; connection refused',
    );
    socket.destroy();
  };

  #onTlsClientError = (err: NodeJS.ErrnoException, socket: TLSSocket): void => {
    const reason = handshakeFailureReason(err, socket);
    const { metrics } = this.#telemetry;
    metrics.recordTlsHandshakeFailure(REGISTRY_LISTENER, reason);
    if (isClientCertReason(reason)) metrics.recordClientCertVerificationFailure(REGISTRY_LISTENER, reason);
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
    if (!this.#address) throw new Error('registry API not listening');
    return this.#address;
  }

  certificateStatus(): ListenerCertificateStatus | undefined {
    return this.certificates?.status();
  }

  reloadCertificates(trigger: string): boolean {
    return this.certificates?.reload(trigger) ?? false;
  }

  /** Stop accepting, end watch streams, close idle connections, then cut the rest. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      this.certificates?.close();
      this.#api.closeWatches();
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
      // Registration requests are short; whatever is still open after this is cut.
      setTimeout(() => {
        for (const s of this.#sockets) s.destroy();
      }, 1000).unref();
      if (!this.server.listening) resolve();
    });
    return this.#closing;
  }
}
