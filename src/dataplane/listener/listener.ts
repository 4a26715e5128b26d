import type { ServerOptions } from 'node:http';
import type { AddressInfo, Server } from 'node:net';
import type { ListenerConfig } from '../../config/schema.ts';
import type { ListenerCertificateStatus } from '../../tls/listener-certificates.ts';
import { createTrustCheck } from '../forward/trusted-proxies.ts';
import { isWebSocketUpgrade } from '../forward/websocket.ts';
import type { ListenerInfo, Pipeline } from '../pipeline.ts';

/** A data-plane listener: plain HTTP/1.1 (HttpListener) or TLS with HTTP/2 and HTTP/1.1 (TlsListener). */
export interface Listener {
  readonly config: ListenerConfig;
  readonly pipeline: Pipeline;
  listen(): Promise<AddressInfo>;
  /** Stop accepting; idle connections close, active ones finish (HTTP/2: GOAWAY). */
  stopAccepting(): void;
  /** Cut whatever is still open (after the drain timeout). */
  destroyConnections(): void;
  /** TLS listeners: the certificates served and trusted, for the admin API. */
  certificateStatus?(): ListenerCertificateStatus;
  /** TLS listeners: reload the certificate files now (SIGHUP); true when a new set was installed. */
  reloadCertificates?(trigger: string): boolean;
}

/** What the pipeline knows of its listener, compiled once from the listener's config. */
export function listenerInfo(config: ListenerConfig, proto: 'http' | 'https'): ListenerInfo {
  return {
    name: config.name,
    proto,
    trust: createTrustCheck(config.trustedProxies),
    underscores: config.limits.headersWithUnderscores,
    reasonHeader: config.reasonHeader,
  };
}

/**
 * The HTTP/1.1 server options every listener uses, plain or TLS. Strict parsing is a security
 * property (request smuggling): the lenient parser is never enabled.
 */
export function strictHttp1Options(limits: ListenerConfig['limits']): ServerOptions {
  return {
    insecureHTTPParser: false,
    joinDuplicateHeaders: false,
    // The pipeline answers a missing Host itself (problem+json, counted, logged, and nothing
    // pipelined after it is processed); Node's check did none of that.
    requireHostHeader: false,
    maxHeaderSize: limits.maxHeaderSize,
    headersTimeout: limits.headersTimeout,
    requestTimeout: limits.requestTimeout,
    keepAliveTimeout: limits.keepAliveTimeout,
    connectionsCheckingInterval: Math.min(1000, Math.max(100, Math.floor(limits.headersTimeout / 4))),
    shouldUpgradeCallback: isWebSocketUpgrade,
  };
}

/** `host:port` (host may be a bracketed IPv6 address) → its parts. */
export function splitAddress(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  let host = address.slice(0, i);
  if (host.startsWith('[')) host = host.slice(1, -1);
  return { host, port: Number(address.slice(i + 1)) };
}

/** Bind `server` to a `host:port` address; resolves with the bound address (port 0 resolved). */
export async function listenOn(server: Server, address: string): Promise<AddressInfo> {
  const { host, port } = splitAddress(address);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server.address() as AddressInfo;
}
