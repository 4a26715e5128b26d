/**
 * How a sidecar talks to its registry: one undici Agent for registrations and the watch stream,
 * whose TLS is the sidecar's own (its CA bundle; its certificate as the credential unless a token
 * is configured) through the same connector as upstream pools, so a rotated certificate is used
 * by the next connection. The registry is verified by its SPIFFE ID (`registry.identity`) or by
 * host name (`serverName`, else the URL's host).
 */
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import { Agent, type Dispatcher } from 'undici';
import { readTokenRef } from '../config/secret-ref.ts';
import { createConnector } from '../dataplane/upstream/connector.ts';
import type { GatewayMetrics } from '../telemetry/metrics.ts';
import { UpstreamTlsSchema } from '../tls/schema.ts';
import { UpstreamTls } from '../tls/upstream-tls.ts';
import type { SidecarConfig } from './schema.ts';

/** The TLS metrics' `upstream` label of the registry connection (`_`: never an upstream's name). */
export const REGISTRY_PEER = '_registry';
const CONNECT_TIMEOUT_MS = 5000;

export class RegistryChannel {
  readonly url: string;
  readonly dispatcher: Dispatcher;
  /** The bearer token, when the credential is one (else the sidecar's certificate). */
  readonly token: string | undefined;
  /** Sent with every request: the bearer token, when the credential is one. */
  readonly headers: Readonly<Record<string, string>>;
  readonly #tls: UpstreamTls | undefined;

  /** Loads the files and the token now; throws when they cannot be used. */
  constructor(
    sidecar: SidecarConfig,
    deps: { logger: Logger; metrics: GatewayMetrics; env: NodeJS.ProcessEnv },
  ) {
    const { registry, identity } = sidecar;
    this.url = registry.url;
    const token =
      registry.token === undefined ? undefined : readTokenRef(registry.token, 'registry token', deps.env);
    this.token = token;
    this.headers = token === undefined ? {} : { authorization: `Bearer ${token}` };
    const url = new URL(registry.url);
    if (url.protocol === 'http:') {
      this.#tls = undefined;
      this.dispatcher = new Agent({ keepAliveTimeout: 30_000, connect: createConnector(CONNECT_TIMEOUT_MS) });
      return;
    }
    const tlsConfig = UpstreamTlsSchema.parse({
      ca: identity.ca,
      // With a token, the token is the credential: no certificate is presented.
      ...(token === undefined ? { cert: identity.cert, key: identity.key } : {}),
      ...(registry.identity === undefined ? {} : { identity: { expect: [registry.identity] } }),
      watch: identity.watch,
    });
    this.#tls = new UpstreamTls(REGISTRY_PEER, tlsConfig, { logger: deps.logger, metrics: deps.metrics });
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    this.dispatcher = new Agent({
      keepAliveTimeout: 30_000,
      connect: createConnector(CONNECT_TIMEOUT_MS, {
        tls: this.#tls,
        serverName: registry.serverName ?? (isIP(host) === 0 ? host : undefined),
        alpn: ['http/1.1'],
      }),
    });
  }

  /** Re-read the certificate files now (SIGHUP). */
  reloadCertificates(trigger: string): void {
    this.#tls?.reload(trigger);
  }

  /** Safe to call twice. */
  async close(): Promise<void> {
    this.#tls?.close();
    await this.dispatcher.close().catch(() => undefined);
  }
}
