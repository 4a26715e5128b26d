/**
 * The configured token issuers, built from `auth.providers` each time the dynamic config is
 * compiled. Like upstream clusters (src/control/snapshot.ts), a provider whose config did not
 * change is carried over from the previous set, the same object with its key set, refresh timers
 * and token cache, so a reload neither refetches keys nor re-verifies tokens.
 *
 * Ownership: each set holds a reference on each of its providers; `close()` releases them and a
 * provider closes when no set holds it. So the previous set can be closed after the swap, and a
 * new set that is discarded (its snapshot failed to compile) can be closed, in either order,
 * without closing what the other still uses.
 */
import type { Logger } from 'pino';
import type { GatewayMetrics } from '../../../telemetry/metrics.ts';
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
  readonly #byName: ReadonlyMap<string, AuthProvider>;
  #closed = false;

  constructor(cfg: AuthConfig, previous: AuthProviders | undefined, deps: AuthProvidersDeps) {
    const byName = new Map<string, AuthProvider>();
    for (const [name, config] of Object.entries(cfg.providers)) {
      const old = previous?.get(name);
      const fingerprint = providerFingerprint(config);
      let provider: AuthProvider;
      if (old !== undefined && !old.closed && old.fingerprint === fingerprint) provider = old;
      else {
        provider = new AuthProvider(name, config, {
          metrics: deps.metrics,
          logger: deps.logger,
          now: deps.now,
          fetcher: deps.fetcherFor?.(name, config),
          fingerprint,
        });
      }
      provider.acquire();
      byName.set(name, provider);
    }
    this.#byName = byName;
    this.names = [...byName.keys()];
  }

  get(name: string): AuthProvider | undefined {
    return this.#byName.get(name);
  }

  providersReady(): { ready: boolean; notReady: string[] } {
    const notReady: string[] = [];
    for (const [name, p] of this.#byName) if (!p.ready) notReady.push(name);
    return { ready: notReady.length === 0, notReady };
  }

  async start(): Promise<void> {
    await Promise.all([...this.#byName.values()].map((p) => p.start()));
  }

  describe(): AuthProviderStatus[] {
    return [...this.#byName.values()].map((p) => p.status());
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const p of this.#byName.values()) p.release();
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
