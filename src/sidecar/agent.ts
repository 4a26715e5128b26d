/**
 * What a gateway in sidecar mode does besides serving its listeners: it follows the registry for
 * the services its application calls (the outbound upstreams' endpoints), waits for the local
 * application to be ready, registers its service (the inbound listener's port) and keeps the lease,
 * drains the registration while the application is not ready, and at shutdown drains, waits for
 * peers to notice and deregisters before the listeners stop.
 *
 *   start ─▶ follow the registry (watch the destinations)
 *         └▶ probe the application ─ ready ─▶ register (active) ─▶ heartbeats
 *                                     not ready ─▶ registration draining, until ready again
 *   SIGTERM ─▶ drain ─▶ wait registry.drainDelay (peers stop sending) ─▶ deregister ─▶ listeners stop
 */
import type { Logger } from 'pino';
import type { ProviderFactory } from '../discovery/provider.ts';
import { createRegistryProviderFactory } from '../discovery/registry-provider.ts';
import type { RegistryDiscoveryConfig } from '../discovery/schema.ts';
import { RegistrationClient, RegistrationRejectedError } from '../registry/client.ts';
import { RegistryFollower } from '../registry/follower.ts';
import type { GatewayMetrics, MeshMetrics } from '../telemetry/metrics.ts';
import { AppReadiness, type ReadinessChange } from './app-readiness.ts';
import { INBOUND, identityPattern, OUTBOUND, outboundServices } from './derive.ts';
import { MeshSide } from './mesh-telemetry.ts';
import { RegistryChannel } from './registry-channel.ts';
import type { SidecarConfig } from './schema.ts';

export type RegistrationPhase =
  | 'none'
  | 'waiting_for_app'
  | 'registering'
  | 'registered'
  | 'rejected'
  | 'deregistering'
  | 'deregistered';

export interface SidecarAgentDeps {
  readonly logger: Logger;
  readonly metrics: GatewayMetrics;
  readonly env: NodeJS.ProcessEnv;
}

export class SidecarAgent {
  readonly config: SidecarConfig;
  readonly channel: RegistryChannel;
  readonly follower: RegistryFollower;
  readonly readiness: AppReadiness | undefined;
  readonly #logger: Logger;
  readonly #metrics: MeshMetrics;
  readonly #sides: ReadonlyMap<string, MeshSide>;
  #registration: RegistrationClient | undefined;
  #phase: RegistrationPhase;
  #rejection: string | undefined;
  #draining: Promise<void> | undefined;
  #closed: Promise<void> | undefined;

  /** Builds everything (reads the token and certificates); throws when they cannot be used. */
  constructor(config: SidecarConfig, deps: SidecarAgentDeps) {
    this.config = config;
    this.#logger = deps.logger;
    this.#metrics = deps.metrics.mesh;
    this.channel = new RegistryChannel(config, deps);
    this.follower = new RegistryFollower({
      url: config.registry.url,
      services: outboundServices(config).map((s) => s.service),
      dispatcher: this.channel.dispatcher,
      headers: this.channel.headers,
      logger: deps.logger,
    });
    const inbound = config.inbound;
    this.readiness =
      inbound === undefined
        ? undefined
        : new AppReadiness({
            app: inbound.app,
            path: inbound.readiness.path,
            intervalMs: inbound.readiness.interval,
            timeoutMs: inbound.readiness.timeout,
            failureThreshold: inbound.readiness.failureThreshold,
            successThreshold: inbound.readiness.successThreshold,
          });
    this.#phase = inbound === undefined ? 'none' : 'waiting_for_app';
    const side = (direction: 'inbound' | 'outbound'): MeshSide =>
      new MeshSide(
        {
          direction,
          service: config.service,
          identityPattern: identityPattern(config),
          maxPeers: config.metrics.maxPeers,
        },
        deps.metrics.mesh,
      );
    const sides = new Map<string, MeshSide>([[OUTBOUND, side('outbound')]]);
    if (inbound !== undefined) sides.set(INBOUND, side('inbound'));
    this.#sides = sides;
  }

  /**
   * Registry upstreams read the registry through this agent's follower, which follows each
   * service an upstream asks for (a reload may add destinations).
   */
  providerFactory(): ProviderFactory<RegistryDiscoveryConfig> {
    const follower = this.follower;
    const providers = createRegistryProviderFactory(follower);
    return function followedProvider(config, ctx) {
      follower.follow(config.registry);
      return providers(config, ctx);
    };
  }

  meshSide(listener: string): MeshSide | undefined {
    return this.#sides.get(listener);
  }

  /** The registration is as it should be: registered and active, or nothing to register. */
  get ready(): boolean {
    if (this.readiness === undefined) return true;
    return this.#phase === 'registered' && this.readiness.ready;
  }

  /**
   * Follow the registry, and (with an inbound side) wait for the application, then register the
   * inbound listener's port. Returns at once; the registration happens in the background.
   */
  start(inboundPort: number | undefined): void {
    this.follower.start();
    const readiness = this.readiness;
    if (readiness === undefined || inboundPort === undefined) return;
    readiness.on('change', ({ ready, check, consecutive }: ReadinessChange) => {
      this.#metrics.readinessChanged(ready);
      this.#logger[ready ? 'info' : 'warn'](
        { app: readiness.url, ready, check, consecutive },
        ready
          ? `application ready after ${consecutive} passed probe(s) in a row`
          : `application not ready after ${consecutive} failed probe(s) in a row (last: ${check}); draining the registration`,
      );
      // After the first registration, readiness moves the registration between active and draining.
      this.#registration?.setState(ready ? 'active' : 'draining');
    });
    readiness.start();
    void readiness.whenReady().then(() => this.#register(inboundPort));
  }

  #register(port: number): void {
    if (this.#draining !== undefined || this.#registration !== undefined) return;
    const { registry, service } = this.config;
    const client = new RegistrationClient({
      registry: registry.url,
      service,
      port,
      id: registry.instanceId,
      address: registry.address,
      protocol: 'https',
      zone: registry.zone,
      version: registry.version,
      weight: registry.weight,
      metadata: registry.metadata,
      ttlMs: registry.ttl,
      drainDelayMs: registry.drainDelay,
      dispatcher: this.channel.dispatcher,
      token: this.channel.token,
      state: this.readiness?.ready === false ? 'draining' : 'active',
    });
    this.#registration = client;
    this.#phase = 'registering';
    client.on('registered', (instance: { id: string; address: string; port: number; state: string }) => {
      this.#phase = 'registered';
      this.#logger.info(
        { service, id: instance.id, address: instance.address, port: instance.port, state: instance.state },
        'registered with the registry',
      );
    });
    client.on('failure', (err: Error) =>
      this.#logger.warn({ err: err.message, service }, 'registry request failed; retrying'),
    );
    client.start().catch((err: unknown) => {
      if (!(err instanceof RegistrationRejectedError)) return;
      this.#phase = 'rejected';
      this.#rejection = err.message;
      this.#logger.error({ err: err.message, service }, 'the registry refused this sidecar registration');
    });
  }

  /**
   * At shutdown, before the listeners stop: drain the registration, wait `drainDelay` for peers to
   * stop sending new requests, deregister. The listeners keep serving meanwhile. Safe to call twice.
   */
  drain(): Promise<void> {
    this.#draining ??= this.#drain();
    return this.#draining;
  }

  async #drain(): Promise<void> {
    await this.readiness?.close();
    const registration = this.#registration;
    if (registration === undefined) return;
    this.#phase = 'deregistering';
    this.#logger.info(
      { service: this.config.service, drainDelayMs: this.config.registry.drainDelay },
      'draining the registration',
    );
    await registration.close();
    this.#phase = 'deregistered';
  }

  /** Stop following the registry and close the channel. Safe to call twice. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      await this.drain();
      await this.follower.close();
      await this.channel.close();
    })();
    return this.#closed;
  }

  reloadCertificates(trigger: string): void {
    this.channel.reloadCertificates(trigger);
  }

  /** For the admin API. */
  describe(): Record<string, unknown> {
    return {
      service: this.config.service,
      ready: this.ready,
      registration: {
        phase: this.#phase,
        state: this.#registration?.registeredState ?? null,
        instance: this.#registration?.id ?? null,
        rejection: this.#rejection ?? null,
      },
      app:
        this.readiness === undefined
          ? null
          : {
              url: this.readiness.url,
              ready: this.readiness.ready,
              lastCheck: this.readiness.lastCheck ?? null,
              consecutive: this.readiness.consecutive,
            },
      registry: { url: this.config.registry.url, follower: this.follower.health() },
      outbound: outboundServices(this.config).map((s) => s.service),
    };
  }
}
