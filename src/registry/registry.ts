/**
 * The service registry of a gateway: its store (memory, or Redis shared by the replicas), and the
 * registration API on a listener of its own when `registry.listener` is set. Built at start from
 * the static `registry` section; `store` is what endpoint providers read.
 */

import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import type { RedisConnection } from '../stores/redis.ts';
import type { RegistryInstanceSource } from '../telemetry/metrics.ts';
import type { Telemetry } from '../telemetry/telemetry.ts';
import { createAddressPolicy } from './address-policy.ts';
import { instanceJson, RegistryApi } from './api.ts';
import { Credentials } from './credentials.ts';
import { MemoryRegistryStore } from './memory-store.ts';
import { RateLimiter } from './rate-limit.ts';
import { RedisRegistryStore } from './redis-store.ts';
import { createRegistrationParser } from './registration.ts';
import type { RegistryConfig } from './schema.ts';
import { RegistryServer } from './server.ts';
import type { Instance, RegistryStore } from './store.ts';

export interface RegistryDeps {
  readonly telemetry: Telemetry;
  /** Required when `store` is `redis`. */
  readonly redis?: RedisConnection | undefined;
  readonly env?: NodeJS.ProcessEnv | undefined;
  /** The response header naming the cause of a problem response (`x-peregrine-reason`). */
  readonly reasonHeader?: string | undefined;
}

type ViewStore = RegistryStore & { all(): IterableIterator<Instance> };

export class Registry {
  readonly config: RegistryConfig;
  readonly gatewayId: string;
  readonly store: RegistryStore;
  readonly server: RegistryServer | undefined;
  readonly #telemetry: Telemetry;
  #closing: Promise<void> | undefined;

  /**
   * Reads the credentials (token files and variables) and the listener's certificates now; throws
   * CredentialLoadError or CertificateLoadError when they are unusable.
   */
  constructor(config: RegistryConfig, deps: RegistryDeps) {
    this.config = config;
    this.#telemetry = deps.telemetry;
    this.gatewayId = config.gatewayId ?? `${hostname()}/${process.pid}`;
    const { logger } = deps.telemetry;
    const metrics = deps.telemetry.metrics.registryMetrics;
    metrics.setMaxServices(config.limits.maxServices);
    const credentials = new Credentials(config.credentials, deps.env);
    const storeOptions = {
      limits: config.limits,
      sweepInterval: config.sync.sweepInterval,
      metrics,
      logger: logger.child({ component: 'registry' }),
    };
    let store: ViewStore;
    if (config.store === 'redis') {
      if (deps.redis === undefined)
        throw new Error('registry.store is redis but no redis section is configured');
      store = new RedisRegistryStore(deps.redis, {
        ...storeOptions,
        resyncInterval: config.sync.resyncInterval,
      });
    } else {
      store = new MemoryRegistryStore(storeOptions);
    }
    this.store = store;
    metrics.addStore(store.kind);
    metrics.watchInstances(instanceSource(store, this.gatewayId));
    if (config.listener !== undefined) {
      const api = new RegistryApi({
        store,
        credentials,
        addressPolicy: createAddressPolicy(config.addresses),
        parse: createRegistrationParser(config),
        rateLimiter: new RateLimiter(config.rateLimit.perSecond, config.rateLimit.burst),
        gatewayId: this.gatewayId,
        telemetry: deps.telemetry,
        maxWatchStreams: config.limits.maxWatchStreams,
        reasonHeader: deps.reasonHeader ?? 'x-peregrine-reason',
      });
      try {
        this.server = new RegistryServer(config.listener, api, deps.telemetry);
      } catch (err) {
        void store.close();
        throw err;
      }
    }
  }

  /** What the admin API shows: this gateway's name, the store's health, the API's address, the services. */
  describe(): unknown {
    const address = this.server?.listening ? this.server.address : undefined;
    return {
      gatewayId: this.gatewayId,
      store: this.store.health(),
      api: address ? `${address.address}:${address.port}` : null,
      services: this.store.services(),
    };
  }

  /**
   * Registered instances with their leases, for the admin API: of one service, or of every
   * service, sorted by service and id, at most `limit` (`total` says how many there are).
   */
  instances(service: string | undefined, limit: number): { total: number; instances: unknown[] } {
    const services = service === undefined ? this.store.services().map((s) => s.service) : [service];
    const instances: unknown[] = [];
    let total = 0;
    for (const name of services) {
      for (const i of this.store.list(name)) {
        total++;
        if (instances.length >= limit) continue;
        instances.push(instanceJson(i));
      }
    }
    return { total, instances };
  }

  /** Bind the registration API (when configured). */
  async listen(): Promise<AddressInfo | undefined> {
    const address = await this.server?.listen();
    if (address !== undefined)
      this.#telemetry.logger.info(
        { address: `${address.address}:${address.port}`, store: this.store.kind, gatewayId: this.gatewayId },
        'registry API listening',
      );
    return address;
  }

  /** Stop the API and the store's timers and subscriptions. Leases stay until they expire. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.server?.close();
      await this.store.close();
      this.#telemetry.metrics.registryMetrics.watchInstances(undefined);
    })();
    return this.#closing;
  }
}

/** Instance counts for the gauge: by service, state, and whether this gateway registered them. */
function instanceSource(store: ViewStore, gatewayId: string): RegistryInstanceSource {
  return {
    *instanceCounts() {
      const counts = new Map<string, { service: string; state: string; source: string; count: number }>();
      for (const i of store.all()) {
        const source = i.registeredVia === gatewayId ? 'local' : 'peer';
        const key = `${i.service}\u0000${i.state}\u0000${source}`;
        const c = counts.get(key);
        if (c === undefined) counts.set(key, { service: i.service, state: i.state, source, count: 1 });
        else c.count++;
      }
      yield* counts.values();
    },
  };
}
