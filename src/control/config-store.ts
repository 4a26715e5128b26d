/**
 * Owns the current Snapshot. Reloads re-read the config file and validate it in a child process,
 * then compile a new snapshot in slices between requests; only then is it swapped in, so requests
 * in flight finish on the snapshot they started with. A reload that fails leaves the last good
 * snapshot serving, is logged and counted, and its issues are kept for the admin API.
 */

import { setImmediate as nextTurn } from 'node:timers/promises';
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import { ConfigLoader, fingerprintOf, type LoadedConfig } from '../config/load-apart.ts';
import { ConfigError, type ConfigIssue } from '../config/loader.ts';
import { type Config, dynamicPart } from '../config/schema.ts';
import { replicaPosition } from '../dataplane/upstream/aperture.ts';
import { Discovery } from '../discovery/discovery.ts';
import { createDnsProviderFactory } from '../discovery/dns-provider.ts';
import type { ProviderFactories } from '../discovery/provider.ts';
import { staticSidecarPart } from '../sidecar/derive.ts';
import { runInSlices } from '../slices.ts';
import type { RedisConnection } from '../stores/redis.ts';
import type { GatewayMetrics, RouteMetricsConfig } from '../telemetry/metrics.ts';
import { UpstreamTlsSet } from '../tls/upstream-tls.ts';
import {
  type CompileResult,
  compileSnapshot,
  compileSnapshotInSlices,
  type Snapshot,
  type SnapshotDeps,
} from './snapshot.ts';

/**
 * A reload compiles in slices of about this long, with a turn of the event loop between: requests
 * on the current snapshot wait at most about one slice (plus a GC pause).
 */
const COMPILE_SLICE_MS = 10;

export interface ReloadFailure {
  readonly at: string;
  readonly trigger: string;
  readonly issues: readonly ConfigIssue[];
}

export type ReloadResult =
  | { readonly ok: true; readonly version: number; readonly changed: boolean }
  | { readonly ok: false; readonly failure: ReloadFailure };

const STATIC_KEYS = [
  'mode',
  'listeners',
  'admin',
  'telemetry',
  'lifecycle',
  'redis',
  'registry',
  'replica',
] as const;

/** What the metrics are told of a snapshot's routes. */
function* routeMetrics(snapshot: Snapshot): Iterable<RouteMetricsConfig> {
  for (const r of snapshot.routes.routes)
    yield { name: r.name, histogram: r.config.metrics?.histogram, httpRoute: r.httpRoute };
}

export class ConfigStore {
  readonly file: string | undefined;
  /** The config the process started with: its static part is what runs until restart. */
  readonly initial: Config;
  /** Every upstream's TLS (files, rotation), shared by the endpoints of all snapshots. */
  readonly upstreamTls: UpstreamTlsSet;
  #current: Snapshot;
  #effective: Config;
  #lastFailure: ReloadFailure | undefined;
  #lastSuccessAt: string;
  #version = 1;
  #reloading: Promise<ReloadResult> | undefined;
  /** The run after the current one, shared by the calls made during the current one. */
  #queued: Promise<ReloadResult> | undefined;
  readonly #logger: Logger;
  readonly #metrics: GatewayMetrics;
  readonly #snapshotDeps: SnapshotDeps;
  readonly #env: NodeJS.ProcessEnv;
  /** configFingerprint of the dynamic part serving now. */
  #fingerprint: string;
  /** Aborted by close(): a reload still loading stops, none starts. */
  readonly #closing = new AbortController();
  /** Loads the file for reloads, in a child process kept between them. */
  readonly #loader = new ConfigLoader();
  /** Endpoint sources of the serving upstreams; synced after every swap. */
  readonly discovery: Discovery;

  constructor(
    config: Config,
    opts: {
      file?: string;
      logger: Logger;
      metrics: GatewayMetrics;
      env?: NodeJS.ProcessEnv;
      /** How discovered upstreams get their providers (default: DNS through the system resolver). */
      providers?: ProviderFactories | undefined;
      /** The shared Redis connection, for policies that count in Redis. */
      redis?: RedisConnection | undefined;
    },
  ) {
    this.file = opts.file;
    this.initial = config;
    this.#effective = config;
    this.#logger = opts.logger;
    this.#metrics = opts.metrics;
    this.#env = opts.env ?? process.env;
    this.#fingerprint = fingerprintOf(config);
    if (this.file) this.#loader.remember(config);
    this.upstreamTls = new UpstreamTlsSet({ logger: opts.logger, metrics: opts.metrics });
    this.#snapshotDeps = {
      metrics: opts.metrics,
      logger: opts.logger,
      tls: this.upstreamTls,
      redis: opts.redis,
      replica: replicaPosition(config.replica),
    };
    this.#current = compileSnapshot(
      dynamicPart(config),
      this.#version,
      undefined,
      this.#snapshotDeps,
    ).snapshot;
    void this.#current.auth.start();
    this.#configureRouteMetrics();
    this.discovery = new Discovery({
      logger: opts.logger,
      metrics: opts.metrics,
      factories: opts.providers ?? { dns: createDnsProviderFactory() },
    });
    this.discovery.sync(this.#current);
    this.#lastSuccessAt = new Date().toISOString();
    this.#metrics.recordConfigReload('success');
  }

  get current(): Snapshot {
    return this.#current;
  }

  /** Static part from start plus the dynamic part now serving. */
  get effective(): Config {
    return this.#effective;
  }

  get lastFailure(): ReloadFailure | undefined {
    return this.#lastFailure;
  }

  get lastSuccessAt(): string {
    return this.#lastSuccessAt;
  }

  /**
   * Reload from the file. Concurrent calls coalesce: one runs, and one more runs after it if a
   * change arrived meanwhile, so the last write always wins. Every call resolves with the result
   * of a run that read the file after the call (a call during a run waits for the next one).
   */
  reload(trigger: string): Promise<ReloadResult> {
    if (this.#closing.signal.aborted) {
      return Promise.resolve(
        this.#fail(trigger, [
          { file: this.file ?? '(none)', path: '', message: 'the gateway is shutting down' },
        ]),
      );
    }
    const running = this.#reloading;
    if (running) {
      this.#queued ??= running.then(() => {
        this.#queued = undefined;
        return this.reload(trigger);
      });
      return this.#queued;
    }
    const run = this.#reloadOnce(trigger).finally(() => {
      this.#reloading = undefined;
    });
    this.#reloading = run;
    return run;
  }

  async #reloadOnce(trigger: string): Promise<ReloadResult> {
    if (!this.file) {
      return this.#fail(trigger, [
        { file: '(none)', path: '', message: 'gateway was started without a config file' },
      ]);
    }
    let next: LoadedConfig;
    try {
      // Parsing and validating a large file takes a second of CPU: away from the event loop.
      next = await this.#loader.load(this.file, this.#env, this.#closing.signal);
    } catch (err) {
      const issues =
        err instanceof ConfigError ? err.issues : [{ file: this.file, path: '', message: String(err) }];
      return this.#fail(trigger, issues);
    }
    // The last message from the child was read in this turn: compile from the next one.
    await nextTurn();
    return this.#apply(next, trigger);
  }

  /** Swap in a validated config's dynamic part, compiled in slices while the current one serves. */
  async #apply(next: LoadedConfig, trigger: string): Promise<ReloadResult> {
    const changedStatic: string[] = STATIC_KEYS.filter(
      (k) => !isDeepStrictEqual(next.config[k], this.initial[k]),
    );
    if (!isDeepStrictEqual(staticSidecarPart(next.config.sidecar), staticSidecarPart(this.initial.sidecar)))
      changedStatic.push('sidecar');
    if (changedStatic.length > 0) {
      this.#logger.warn(
        { sections: changedStatic, trigger },
        'static configuration changed; it takes effect on restart, only upstreams and routes were reloaded',
      );
    }
    const dynamic = dynamicPart(next.config);
    const changed = next.fingerprint !== this.#fingerprint;
    if (changed) {
      let compiled: CompileResult;
      try {
        compiled = await compileSnapshotInSlices(
          dynamic,
          this.#version + 1,
          this.#current,
          this.#snapshotDeps,
          COMPILE_SLICE_MS,
        );
      } catch (err) {
        // An error naming its key (an upstream's TLS file) is reported there.
        const path = (err as { keyPath?: unknown }).keyPath;
        return this.#fail(trigger, [
          typeof path === 'string'
            ? { file: this.file ?? '(none)', path, message: (err as Error).message }
            : { file: this.file ?? '(none)', path: '', message: `compile failed: ${String(err)}` },
        ]);
      }
      this.#version++;
      this.#fingerprint = next.fingerprint;
      this.#current = compiled.snapshot;
      this.#effective = { ...this.initial, ...dynamic };
      // Retired upstreams drain: their pools close once in-flight requests on them finish, except
      // the endpoints the new clusters took over, which stay open for them.
      for (const cluster of compiled.retired) void cluster.close();
      // Endpoint sources follow the new snapshot; a changed `endpoints` list is applied here, as a
      // diff to the kept cluster's live set.
      this.discovery.sync(this.#current);
      compiled.retire();
      void this.#current.auth.start();
      // After the swap, in slices too: a route's series follow its settings a few ms later.
      await runInSlices(this.#metrics.configureRoutesSteps(routeMetrics(this.#current)), COMPILE_SLICE_MS);
    }
    this.#lastFailure = undefined;
    this.#lastSuccessAt = new Date().toISOString();
    this.#metrics.recordConfigReload('success');
    this.#logger.info({ trigger, version: this.#version, changed }, 'configuration reloaded');
    return { ok: true, version: this.#version, changed };
  }

  /** Which routes now serving have a latency histogram of their own. */
  #configureRouteMetrics(): void {
    this.#metrics.configureRoutes(routeMetrics(this.#current));
  }

  #fail(trigger: string, issues: readonly ConfigIssue[]): ReloadResult {
    const failure: ReloadFailure = { at: new Date().toISOString(), trigger, issues };
    this.#lastFailure = failure;
    this.#metrics.recordConfigReload('failure');
    this.#logger.error(
      {
        trigger,
        issues: issues.map((i) => `${i.file}${i.line ? `:${i.line}` : ''} ${i.path}: ${i.message}`),
      },
      'configuration reload rejected; the last good configuration keeps serving',
    );
    return { ok: false, failure };
  }

  /** Stop a reload in progress (a compile already under way finishes and is swapped in first). */
  async #settleReload(): Promise<void> {
    this.#closing.abort();
    await this.#reloading;
    await this.#queued;
    this.#loader.close();
  }

  async close(): Promise<void> {
    await this.#settleReload();
    this.#current.auth.close();
    this.#current.policyState.close();
    await this.discovery.close();
    await Promise.all([...this.#current.clusters.values()].map((c) => c.close()));
  }

  async destroy(): Promise<void> {
    await this.#settleReload();
    this.#current.auth.close();
    this.#current.policyState.close();
    await this.discovery.close();
    await Promise.all([...this.#current.clusters.values()].map((c) => c.destroy()));
  }
}
