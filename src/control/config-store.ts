/**
 * Owns the current Snapshot. Reloads re-read the config file, validate it and compile a new
 * snapshot; only then is it swapped in. A reload that fails leaves the last good snapshot serving,
 * is logged and counted, and its issues are kept for the admin API.
 */
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import { ConfigError, type ConfigIssue, loadConfigFile } from '../config/loader.ts';
import { type Config, dynamicPart } from '../config/schema.ts';
import type { GatewayMetrics } from '../telemetry/metrics.ts';
import { compileSnapshot, type Snapshot } from './snapshot.ts';

export interface ReloadFailure {
  readonly at: string;
  readonly trigger: string;
  readonly issues: readonly ConfigIssue[];
}

export type ReloadResult =
  | { readonly ok: true; readonly version: number; readonly changed: boolean }
  | { readonly ok: false; readonly failure: ReloadFailure };

const STATIC_KEYS = ['listeners', 'admin', 'telemetry', 'lifecycle', 'redis', 'registry'] as const;

export class ConfigStore {
  readonly file: string | undefined;
  /** The config the process started with: its static part is what runs until restart. */
  readonly initial: Config;
  #current: Snapshot;
  #effective: Config;
  #lastFailure: ReloadFailure | undefined;
  #lastSuccessAt: string;
  #version = 1;
  #reloading: Promise<ReloadResult> | undefined;
  #pendingAgain = false;
  readonly #logger: Logger;
  readonly #metrics: GatewayMetrics;
  readonly #env: NodeJS.ProcessEnv;

  constructor(
    config: Config,
    opts: { file?: string; logger: Logger; metrics: GatewayMetrics; env?: NodeJS.ProcessEnv },
  ) {
    this.file = opts.file;
    this.initial = config;
    this.#effective = config;
    this.#logger = opts.logger;
    this.#metrics = opts.metrics;
    this.#env = opts.env ?? process.env;
    this.#current = compileSnapshot(dynamicPart(config), this.#version, undefined, {
      metrics: opts.metrics,
      logger: opts.logger,
    }).snapshot;
    void this.#current.auth.start();
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
   * change arrived meanwhile, so the last write always wins.
   */
  reload(trigger: string): Promise<ReloadResult> {
    if (this.#reloading) {
      this.#pendingAgain = true;
      return this.#reloading;
    }
    this.#reloading = this.#reloadOnce(trigger).finally(() => {
      this.#reloading = undefined;
      if (this.#pendingAgain) {
        this.#pendingAgain = false;
        void this.reload(trigger);
      }
    });
    return this.#reloading;
  }

  async #reloadOnce(trigger: string): Promise<ReloadResult> {
    if (!this.file) {
      return this.#fail(trigger, [
        { file: '(none)', path: '', message: 'gateway was started without a config file' },
      ]);
    }
    let next: Config;
    try {
      next = await loadConfigFile(this.file, this.#env);
    } catch (err) {
      const issues =
        err instanceof ConfigError ? err.issues : [{ file: this.file, path: '', message: String(err) }];
      return this.#fail(trigger, issues);
    }
    return this.apply(next, trigger);
  }

  /** Swap in a validated config's dynamic part. */
  apply(next: Config, trigger: string): ReloadResult {
    const changedStatic = STATIC_KEYS.filter((k) => !isDeepStrictEqual(next[k], this.initial[k]));
    if (changedStatic.length > 0) {
      this.#logger.warn(
        { sections: changedStatic, trigger },
        'static configuration changed; it takes effect on restart, only upstreams and routes were reloaded',
      );
    }
    const dynamic = dynamicPart(next);
    const changed = !isDeepStrictEqual(dynamic, this.#current.config);
    if (changed) {
      let compiled: ReturnType<typeof compileSnapshot>;
      try {
        compiled = compileSnapshot(dynamic, this.#version + 1, this.#current, {
          metrics: this.#metrics,
          logger: this.#logger,
        });
      } catch (err) {
        return this.#fail(trigger, [
          { file: this.file ?? '(none)', path: '', message: `compile failed: ${String(err)}` },
        ]);
      }
      this.#version++;
      this.#current = compiled.snapshot;
      this.#effective = { ...this.initial, ...dynamic };
      // Retired upstreams drain: their pools close once in-flight requests on them finish, except
      // the endpoints the new clusters took over, which stay open for them.
      for (const cluster of compiled.retired) void cluster.close();
      compiled.retire();
      void this.#current.auth.start();
    }
    this.#lastFailure = undefined;
    this.#lastSuccessAt = new Date().toISOString();
    this.#metrics.recordConfigReload('success');
    this.#logger.info({ trigger, version: this.#version, changed }, 'configuration reloaded');
    return { ok: true, version: this.#version, changed };
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

  async close(): Promise<void> {
    this.#current.auth.close();
    this.#current.policyState.close();
    await Promise.all([...this.#current.clusters.values()].map((c) => c.close()));
  }

  async destroy(): Promise<void> {
    this.#current.auth.close();
    this.#current.policyState.close();
    await Promise.all([...this.#current.clusters.values()].map((c) => c.destroy()));
  }
}
