/**
 * The registration API's listener: its own address, never the data plane's or the admin port.
 * Plain HTTP/1.1, or TLS and mTLS as every side listener has them (side-listener.ts): with
 * `clientAuth`, the verified identity of a client is attached to its connection and read by the
 * credentials.
 */
import { SideListener } from '../dataplane/listener/side-listener.ts';
import type { Telemetry } from '../telemetry/telemetry.ts';
import type { RegistryApi } from './api.ts';
import type { RegistryListenerConfig } from './schema.ts';

/** The listener name in logs and TLS metrics. */
export const REGISTRY_LISTENER = 'registry';

export class RegistryServer extends SideListener {
  readonly #api: RegistryApi;

  /** Loads the certificate files when TLS is configured; throws CertificateLoadError when they are unusable. */
  constructor(config: RegistryListenerConfig, api: RegistryApi, telemetry: Telemetry) {
    super(REGISTRY_LISTENER, config, api.handle, telemetry);
    this.#api = api;
  }

  /** Stop accepting, end watch streams, close idle connections, then cut the rest. Safe to call twice. */
  override close(): Promise<void> {
    this.#api.closeWatches();
    return super.close();
  }
}
