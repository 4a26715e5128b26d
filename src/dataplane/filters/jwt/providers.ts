/**
 * The configured token issuers, built from `auth.providers` each time the dynamic config is
 * compiled. Like a policy's state, a provider is kept by the rule of carried-state.ts: one whose
 * name and config fingerprint did not change is carried over from the previous set, the same
 * object with its key set, refresh timers and token cache, so a reload neither refetches keys nor
 * re-verifies tokens. Each set holds a reference on each of its providers and a provider closes
 * when no set holds it, so the previous set can be closed after the swap, and a new set that is
 * discarded (its snapshot failed to compile) can be closed, in either order.
 */
import type { Logger } from 'pino';
import type { GatewayMetrics } from '../../../telemetry/metrics.ts';
import { CarriedState } from '../carried-state.ts';
import type { JwksFetcher } from './jwks-fetch.ts';
import { AuthProvider, type AuthProviderStatus, providerFingerprint } from './provider.ts';
import type { AuthConfig, AuthProviderConfig } from './schema.ts';

export type { AuthProvider, AuthProviderStatus } from './provider.ts';

export interface AuthProviders {
  /** Provider names in configuration order. */
  readonly names: readonly string[];
  get(name: string): AuthProvider | undefined;
  /** Ready when every provider has usable keys; `notReady` names the others. */
  providersReady(): { ready: boolean; notReady: string[] };
  /**
   * Load keys: fetch every remote JWKS once, import configured keys. Resolves when each provider
   * has tried once, whatever the outcome (failures are retried in the background); never rejects.
   */
  start(): Promise<void>;
  /** Per-provider state for the admin API (/v1/auth). */
  describe(): AuthProviderStatus[];
  /** Release this set's providers (those no other set uses close). Safe to call twice. */
  close(): void;
}

export interface AuthProvidersDeps {
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  /** ms since the epoch; Date.now by default (tests). */
  readonly now?: () => number;
  /** A fetcher to use instead of HTTP for a jwksUri provider (tests). */
  readonly fetcherFor?: (name: string, config: AuthProviderConfig) => JwksFetcher | undefined;
}

class ProviderSet implements AuthProviders {
  readonly names: readonly string[];
  readonly state: CarriedState<AuthProvider>;

  constructor(cfg: AuthConfig, previous: AuthProviders | undefined, deps: AuthProvidersDeps) {
    const state = new CarriedState(previous instanceof ProviderSet ? previous.state : undefined);
    for (const [name, config] of Object.entries(cfg.providers)) {
      const fingerprint = providerFingerprint(config);
      state.take(
        name,
        fingerprint,
        () =>
          new AuthProvider(name, config, {
            metrics: deps.metrics,
            logger: deps.logger,
            now: deps.now,
            fetcher: deps.fetcherFor?.(name, config),
            fingerprint,
          }),
      );
    }
    state.seal();
    this.state = state;
    this.names = state.keys();
  }

  get(name: string): AuthProvider | undefined {
    return this.state.get(name);
  }

  providersReady(): { ready: boolean; notReady: string[] } {
    const notReady: string[] = [];
    for (const p of this.state.values()) if (!p.ready) notReady.push(p.name);
    return { ready: notReady.length === 0, notReady };
  }

  async start(): Promise<void> {
    await Promise.all(this.state.values().map((p) => p.start()));
  }

  describe(): AuthProviderStatus[] {
    return this.state.values().map((p) => p.status());
  }

  close(): void {
    this.state.close();
  }
}

/**
 * Build the providers of `cfg`, carrying over from `previous` each provider whose config is
 * unchanged. No I/O happens until `start()` (or the first token that needs keys).
 */
export function createAuthProviders(
  cfg: AuthConfig,
  previous: AuthProviders | undefined,
  deps: AuthProvidersDeps,
): AuthProviders {
  return new ProviderSet(cfg, previous, deps);
}
