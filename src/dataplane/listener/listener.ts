import type { AddressInfo } from 'node:net';
import type { ListenerConfig } from '../../config/schema.ts';
import type { Pipeline } from '../pipeline.ts';
import type { ListenerCertificateStatus } from './certificates.ts';

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
}
