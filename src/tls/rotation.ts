/**
 * Certificate material that follows its files, for listeners (server side) and upstream pools
 * (client side) alike. Loaded and checked as a whole at construction (a bad set throws), then
 * loaded again when a file changes and on demand (SIGHUP): the new set is checked as a whole
 * before it replaces the current one. A set that fails is rejected, logged and counted, and the
 * current one stays in use. Files are watched through their directories, which survives atomic
 * renames and Kubernetes secret symlink swaps.
 */
import type { Logger } from 'pino';
import { type ConfigWatcher, watchConfigFile } from '../config/watch.ts';
import { CertificateLoadError } from './pem.ts';

/** Files changed together (cert, then key) within this long are loaded as one set. */
const COALESCE_MS = 100;

export type ReloadOutcome = 'success' | 'failure';

/** What the owner of the material (a listener, an upstream) provides. */
export interface RotationSource<M> {
  /** Log fields naming the owner, e.g. `{ listener: 'edge' }`. */
  readonly owner: Readonly<Record<string, string>>;
  /** How log lines name the material: `TLS certificate`, `upstream TLS certificate`. */
  readonly what: string;
  readonly logger: Logger;
  /** Read and check the files; throws CertificateLoadError naming every problem. */
  load(now: number): M;
  /** Log fields describing loaded material (subject, serial, notAfter). */
  describe(material: M): Readonly<Record<string, unknown>>;
  /** A reload after start was applied or rejected (metrics). */
  reloaded(outcome: ReloadOutcome, material: M): void;
}

/** The reload history `GET /v1/certs` shows. */
export interface RotationStatus {
  readonly watching: boolean;
  /** Reloads since start (the start-up load is not counted). */
  readonly reloads: { readonly success: number; readonly failure: number };
  readonly loadedAt: string;
  readonly lastError: { readonly message: string; readonly at: string } | null;
}

export class CertificateRotation<M> {
  readonly #source: RotationSource<M>;
  #material: M;
  /** Bumped on every swap: users that cache something derived from the material compare it. */
  #generation = 1;
  #loadedAt = new Date();
  #success = 0;
  #failure = 0;
  #lastError: { message: string; at: string } | null = null;
  #watchers: ConfigWatcher[] = [];
  #timer: NodeJS.Timeout | undefined;
  #apply: ((material: M) => void) | undefined;
  #started = false;
  #closed = false;

  /** Loads the files now; throws CertificateLoadError when they are not a usable set. */
  constructor(source: RotationSource<M>) {
    this.#source = source;
    this.#material = source.load(Date.now());
  }

  get material(): M {
    return this.#material;
  }

  get generation(): number {
    return this.#generation;
  }

  /**
   * Reloads are possible from now on; `apply` (optional) installs new material where it is used
   * and may throw to reject it. With `files`, those are watched.
   */
  start(files: readonly string[], apply?: (material: M) => void): void {
    if (this.#closed || this.#started) return;
    this.#started = true;
    this.#apply = apply;
    for (const file of files) this.#watchers.push(watchConfigFile(file, () => this.#schedule()));
  }

  #schedule(): void {
    if (this.#closed) return;
    if (this.#timer) this.#timer.refresh();
    else {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.reload('file');
      }, COALESCE_MS);
      this.#timer.unref();
    }
  }

  /**
   * Load the files again and swap the material if they are a good set; `trigger` (`file`,
   * `signal`, ...) is logged. Returns whether it swapped. Does nothing before `start()` or after
   * `close()`.
   */
  reload(trigger: string): boolean {
    if (this.#closed || !this.#started) return false;
    const { logger, owner, what } = this.#source;
    let material: M;
    try {
      material = this.#source.load(Date.now());
      this.#apply?.(material);
    } catch (err) {
      const message =
        err instanceof CertificateLoadError ? err.message : `TLS context: ${(err as Error).message}`;
      this.#failure++;
      this.#lastError = { message, at: new Date().toISOString() };
      this.#source.reloaded('failure', this.#material);
      logger.error(
        { ...owner, trigger, error: message },
        `${what} reload rejected; the previous certificate keeps serving`,
      );
      return false;
    }
    this.#material = material;
    this.#generation++;
    this.#loadedAt = new Date();
    this.#success++;
    this.#lastError = null;
    this.#source.reloaded('success', material);
    logger.info({ ...owner, trigger, ...this.#source.describe(material) }, `${what} reloaded`);
    return true;
  }

  status(): RotationStatus {
    return {
      watching: this.#watchers.length > 0,
      reloads: { success: this.#success, failure: this.#failure },
      loadedAt: this.#loadedAt.toISOString(),
      lastError: this.#lastError,
    };
  }

  /** Stop watching. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    for (const w of this.#watchers) w.close();
    this.#watchers = [];
  }
}
