/**
 * A running gateway: telemetry, the config store, data-plane listeners and the admin API, with the
 * lifecycle (reload on file change/SIGHUP, drain on shutdown). main.ts wires signals to it; tests
 * start it in-process.
 */
import type { AddressInfo } from 'node:net';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { DestinationStream } from 'pino';
import { createAdminApp } from './admin/app.ts';
import { adminAuthMode, createAdminGuard } from './admin/auth.ts';
import type { Config } from './config/schema.ts';
import { watchConfigFile } from './config/watch.ts';
import { ConfigStore, type ReloadResult } from './control/config-store.ts';
import type { Snapshot } from './control/snapshot.ts';
import { HttpListener } from './dataplane/listener/http-listener.ts';
import { type Listener, splitAddress } from './dataplane/listener/listener.ts';
import { SideListener } from './dataplane/listener/side-listener.ts';
import { TlsListener } from './dataplane/listener/tls-listener.ts';
import type { DataplaneHost } from './dataplane/pipeline.ts';
import { createDnsProviderFactory } from './discovery/dns-provider.ts';
import type { ProviderFactories } from './discovery/provider.ts';
import { createRegistryProviderFactory } from './discovery/registry-provider.ts';
import { Registry } from './registry/registry.ts';
import { SidecarAgent } from './sidecar/agent.ts';
import { INBOUND } from './sidecar/derive.ts';
import type { MeshSide } from './sidecar/mesh-telemetry.ts';
import { RedisConnection } from './stores/redis.ts';
import { readRedisConnectOptions } from './stores/redis-connect-options.ts';
import { createTelemetry, type Telemetry } from './telemetry/telemetry.ts';
import { VERSION } from './version.ts';

export interface GatewayOptions {
  readonly config: Config;
  /** The file the config came from: reloads re-read it. */
  readonly configFile?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Where logs go (default stdout). */
  readonly logDestination?: DestinationStream;
  /** Extra span processor, for tests that inspect spans. */
  readonly spanProcessor?: SpanProcessor;
  /**
   * Endpoint providers for discovered upstreams: `dns` (default: the system resolver) and
   * `registry` (default: this gateway's registry store when the config has a `registry` section;
   * without one, registry upstreams stay empty and say why).
   */
  readonly providers?: Partial<ProviderFactories>;
}

/** The admin listener's name in logs and TLS metrics. */
const ADMIN_LISTENER = 'admin';
/** The admin API serves short requests (a scrape streams its answer; these bound the request only). */
const ADMIN_TIMEOUTS = { headersTimeout: 10_000, requestTimeout: 30_000, keepAliveTimeout: 5_000 };

function hostPort(a: AddressInfo): string {
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);
}

export class Gateway implements DataplaneHost {
  readonly telemetry: Telemetry;
  readonly store: ConfigStore;
  readonly listeners: Listener[];
  /** The shared Redis connection, when the config has a `redis` section. */
  readonly redis: RedisConnection | undefined;
  /** The service registry, when the config has a `registry` section. */
  readonly registry: Registry | undefined;
  /** Mode sidecar: registration, the application's readiness, the registry followed (docs/mesh.md). */
  readonly sidecar: SidecarAgent | undefined;
  readonly version = VERSION;
  /** When start() was called: the status page's uptime. */
  readonly startedAt = new Date();
  #admin: SideListener | undefined;
  #adminGuard: ReturnType<typeof createAdminGuard>;
  #adminAddress: AddressInfo | undefined;
  #listenerAddresses = new Map<string, AddressInfo>();
  #draining = false;
  #ready = false;
  #inFlight = 0;
  #idleWaiters: (() => void)[] = [];
  #watcher: { close(): void } | undefined;
  #shutdown: Promise<void> | undefined;

  private constructor(opts: GatewayOptions) {
    const { config } = opts;
    // Read before anything opens: a password or CA that cannot be used stops the start, naming the setting.
    const redisConnect =
      config.redis === undefined ? undefined : readRedisConnectOptions(config.redis, opts.env ?? process.env);
    this.telemetry = createTelemetry(config.telemetry, {
      version: VERSION,
      logDestination: opts.logDestination,
      spanProcessor: opts.spanProcessor,
      recentDecisions: config.admin.recentDecisions,
    });
    const { logger, metrics } = this.telemetry;
    // Before the config store: the first snapshot's Redis-backed policies count through it.
    this.redis = config.redis
      ? new RedisConnection(config.redis, {
          logger: logger.child({ component: 'redis' }),
          metrics: metrics.redis,
          connect: redisConnect,
        })
      : undefined;
    let registry: Registry | undefined;
    let store: ConfigStore | undefined;
    let sidecar: SidecarAgent | undefined;
    try {
      registry = config.registry
        ? new Registry(config.registry, { telemetry: this.telemetry, redis: this.redis, env: opts.env })
        : undefined;
      sidecar =
        config.mode === 'sidecar' && config.sidecar !== undefined
          ? new SidecarAgent(config.sidecar, {
              logger: logger.child({ component: 'sidecar' }),
              metrics,
              env: opts.env ?? process.env,
            })
          : undefined;
      // Before the listeners: their pipelines ask it which mesh side they are.
      this.sidecar = sidecar;
      // Registry upstreams read this gateway's registry store; without a registry they say so (503).
      store = new ConfigStore(config, {
        file: opts.configFile,
        logger,
        metrics,
        env: opts.env,
        redis: this.redis,
        providers: {
          dns: opts.providers?.dns ?? createDnsProviderFactory(),
          registry:
            opts.providers?.registry ??
            sidecar?.providerFactory() ??
            (registry === undefined ? undefined : createRegistryProviderFactory(registry.store)),
        },
      });
      this.registry = registry;
      this.store = store;
      // The admin token is read now: one that cannot be used stops the start, naming the setting.
      this.#adminGuard = createAdminGuard(
        config.admin.auth,
        config.admin.tls?.clientAuth,
        this.telemetry,
        opts.env,
      );
      this.listeners = config.listeners.map((l) =>
        l.tls ? new TlsListener(l, this) : new HttpListener(l, this),
      );
    } catch (err) {
      // Whatever was built is closed: nothing may keep the process alive (a Redis connection).
      void Promise.allSettled([store?.destroy(), registry?.close(), sidecar?.close()]).finally(() =>
        this.redis?.close(),
      );
      throw err;
    }
    this.reload = this.reload.bind(this);
  }

  /** Bind every listener and the admin API; resolves when the gateway is ready. */
  static async start(opts: GatewayOptions): Promise<Gateway> {
    const gw = new Gateway(opts);
    try {
      await gw.#listen();
    } catch (err) {
      await gw.shutdown(0);
      throw err;
    }
    if (opts.configFile && opts.config.lifecycle.watchConfig) {
      gw.#watcher = watchConfigFile(opts.configFile, () => void gw.reload('file'));
    }
    gw.#ready = true;
    // Follow the registry; register once the application is ready (in the background).
    gw.sidecar?.start(gw.#listenerAddresses.get(INBOUND)?.port);
    gw.telemetry.logger.info(
      {
        listeners: Object.fromEntries(
          [...gw.#listenerAddresses].map(([n, a]) => [n, `${a.address}:${a.port}`]),
        ),
        admin: gw.#adminAddress ? hostPort(gw.#adminAddress) : undefined,
        version: VERSION,
      },
      'peregrine ready',
    );
    return gw;
  }

  async #listen(): Promise<void> {
    for (const l of this.listeners) this.#listenerAddresses.set(l.config.name, await l.listen());
    await this.registry?.listen();
    const adminConfig = this.store.initial.admin;
    const registry = this.registry;
    const app = createAdminApp({
      store: this.store,
      metrics: this.telemetry.metrics,
      version: VERSION,
      startedAt: this.startedAt,
      isReady: () => this.ready,
      isDraining: () => this.#draining,
      reload: this.reload,
      listeners: () =>
        this.listeners.map((l) => {
          const a = this.#listenerAddresses.get(l.config.name);
          return {
            name: l.config.name,
            address: a === undefined ? l.config.address : hostPort(a),
            tls: l.config.tls !== undefined,
          };
        }),
      certificates: () =>
        [
          ...this.listeners.map((l) => l.certificateStatus?.()),
          registry?.server?.certificateStatus(),
          this.#admin?.certificateStatus(),
        ].filter((c) => c !== undefined),
      registry: registry ? () => registry.describe() : undefined,
      registryInstances: registry ? (service, limit) => registry.instances(service, limit) : undefined,
      registryStore: registry ? () => registry.store.health() : undefined,
      sidecar: this.sidecar ? () => this.sidecar!.describe() : undefined,
      decisions: this.telemetry.decisions,
      traceUrl: this.store.initial.telemetry.tracing.uiUrl,
      auth: adminAuthMode(adminConfig.auth, adminConfig.tls?.clientAuth),
      guard: this.#adminGuard,
      upstreamCertificates: () => this.store.upstreamTls.statuses(),
      redis: this.redis ? () => this.redis!.rateLimitHealth() : undefined,
    });
    const admin = new SideListener(
      ADMIN_LISTENER,
      { address: adminConfig.address, tls: adminConfig.tls, ...ADMIN_TIMEOUTS },
      app,
      this.telemetry,
    );
    this.#admin = admin;
    this.#adminAddress = await admin.listen();
    if (this.#adminGuard === undefined && !isLoopbackHost(splitAddress(adminConfig.address).host))
      this.telemetry.logger.warn(
        { admin: adminConfig.address },
        'the admin API listens beyond loopback without a credential: set admin.auth.token or admin.tls.clientAuth',
      );
  }

  // DataplaneHost
  currentSnapshot(): Snapshot {
    return this.store.current;
  }
  get draining(): boolean {
    return this.#draining;
  }
  /**
   * Listeners bound, config loaded, every auth provider has keys, every upstream's endpoint source
   * has answered once (a failure counts: it is shown, not waited for), and not draining.
   */
  get ready(): boolean {
    return (
      this.#ready &&
      !this.#draining &&
      this.store.current.auth.providersReady().ready &&
      this.store.discovery.pending().length === 0 &&
      (this.sidecar?.ready ?? true)
    );
  }
  meshSide(listener: string): MeshSide | undefined {
    return this.sidecar?.meshSide(listener);
  }
  requestStarted(): void {
    this.#inFlight++;
  }
  requestFinished(): void {
    this.#inFlight--;
    if (this.#inFlight === 0 && this.#idleWaiters.length > 0) {
      for (const w of this.#idleWaiters.splice(0)) w();
    }
  }
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Address a listener is bound to (port resolved when configured as 0). */
  address(listener?: string): AddressInfo {
    const name = listener ?? this.listeners[0]!.config.name;
    const a = this.#listenerAddresses.get(name);
    if (!a) throw new Error(`no listener named ${name}`);
    return a;
  }

  get adminAddress(): AddressInfo {
    if (!this.#adminAddress) throw new Error('admin API not listening');
    return this.#adminAddress;
  }

  reload(trigger = 'signal'): Promise<ReloadResult> {
    return this.store.reload(trigger);
  }

  /**
   * Re-read every TLS listener's certificate files, and every upstream's client certificate and CA
   * files (SIGHUP); a bad set keeps the current one in use.
   */
  reloadCertificates(trigger = 'signal'): void {
    for (const l of this.listeners) l.reloadCertificates?.(trigger);
    this.registry?.server?.reloadCertificates(trigger);
    this.#admin?.reloadCertificates(trigger);
    this.store.upstreamTls.reload(trigger);
    this.sidecar?.reloadCertificates(trigger);
  }

  /** Address the registration API is bound to. */
  get registryAddress(): AddressInfo {
    const server = this.registry?.server;
    if (server === undefined) throw new Error('no registration API configured');
    return server.address;
  }

  /**
   * Drain and stop: readiness goes false, listeners stop accepting, keep-alive responses carry
   * `Connection: close`, in-flight requests get up to `drainTimeoutMs`, then everything is closed
   * and telemetry flushed. Safe to call twice (the second call waits for the first).
   */
  shutdown(drainTimeoutMs = this.store.initial.lifecycle.drainTimeout): Promise<void> {
    this.#shutdown ??= this.#doShutdown(drainTimeoutMs);
    return this.#shutdown;
  }

  async #doShutdown(drainTimeoutMs: number): Promise<void> {
    const log = this.telemetry.logger;
    this.#draining = true;
    this.#watcher?.close();
    log.info({ inFlight: this.#inFlight, drainTimeoutMs }, 'draining');
    // A sidecar leaves the registry first, serving while its peers stop sending to it.
    await this.sidecar?.drain();
    for (const l of this.listeners) l.stopAccepting();
    const registryClosed = this.registry?.close();
    if (this.#inFlight > 0) {
      let timer: NodeJS.Timeout | undefined;
      const drained = await Promise.race([
        new Promise<boolean>((resolve) => this.#idleWaiters.push(() => resolve(true))),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(resolve, drainTimeoutMs, false);
        }),
      ]);
      clearTimeout(timer);
      if (!drained)
        log.warn({ inFlight: this.#inFlight }, 'drain timeout reached; closing remaining connections');
    }
    for (const l of this.listeners) l.destroyConnections();
    await registryClosed;
    await this.sidecar?.close();
    await this.redis?.close();
    await this.store.destroy();
    await this.#admin?.close(0);
    log.info('stopped');
    await this.telemetry.shutdown();
  }
}
