import type { Clock } from './clock.ts';
import type { Endpoint } from './endpoint.ts';
import type { OutlierDetectionConfig } from './policy-schema.ts';

export interface OutlierHooks {
  onEject(endpoint: Endpoint, reason: string, durationMs: number): void;
  onReturn(endpoint: Endpoint): void;
}

function returnFromEjection(detector: OutlierDetector, endpoint: Endpoint): void {
  detector.restore(endpoint);
}

/**
 * Passive outlier detection per endpoint (Envoy's model): an endpoint with N consecutive gateway
 * errors (no response, 502, 503, 504), or optionally N consecutive 5xx, is ejected from balancing
 * for baseEjectionTime × its ejection count (capped by maxEjectionTime). Each baseEjectionTime it
 * then spends back in service forgives one ejection. At most maxEjectionPercent of the endpoints
 * are out at once, and an ejected endpoint always returns when its time is up (a timer, so it
 * returns even when no traffic arrives to notice).
 */
export class OutlierDetector {
  readonly #cfg: OutlierDetectionConfig;
  readonly #now: Clock;
  readonly #hooks: OutlierHooks;
  #endpointCount: number;
  readonly #timers = new Map<Endpoint, NodeJS.Timeout>();
  #ejected = 0;
  #closed = false;

  constructor(cfg: OutlierDetectionConfig, endpointCount: number, opts: { now: Clock; hooks: OutlierHooks }) {
    this.#cfg = cfg;
    this.#endpointCount = endpointCount;
    this.#now = opts.now;
    this.#hooks = opts.hooks;
  }

  get ejectedCount(): number {
    return this.#ejected;
  }

  /**
   * One attempt's result. `gatewayError`: no usable response, or 502/503/504; `serverError`: that
   * or any other 5xx.
   */
  onResult(e: Endpoint, gatewayError: boolean, serverError: boolean, now: number): void {
    if (!serverError) {
      e.consecutiveGatewayErrors = 0;
      e.consecutive5xx = 0;
      return;
    }
    e.consecutive5xx++;
    if (gatewayError) e.consecutiveGatewayErrors++;
    else e.consecutiveGatewayErrors = 0;
    if (e.ejected || e.removed || this.#closed) return;
    const cfg = this.#cfg;
    if (cfg.consecutiveGatewayErrors > 0 && e.consecutiveGatewayErrors >= cfg.consecutiveGatewayErrors)
      this.#eject(e, now, `${e.consecutiveGatewayErrors} consecutive gateway errors`);
    else if (cfg.consecutive5xx > 0 && e.consecutive5xx >= cfg.consecutive5xx)
      this.#eject(e, now, `${e.consecutive5xx} consecutive 5xx`);
  }

  #eject(e: Endpoint, now: number, reason: string): void {
    const cfg = this.#cfg;
    // The cap: with too few endpoints left, an outlier keeps serving (its counters keep counting,
    // so it goes as soon as another endpoint returns).
    if ((this.#ejected + 1) * 100 > cfg.maxEjectionPercent * this.#endpointCount) return;
    if (e.ejections > 0 && e.returnedAt > 0)
      e.ejections = Math.max(0, e.ejections - Math.floor((now - e.returnedAt) / cfg.baseEjectionTime));
    e.ejections++;
    const durationMs = Math.min(
      cfg.baseEjectionTime * e.ejections,
      Math.max(cfg.maxEjectionTime, cfg.baseEjectionTime),
    );
    e.ejected = true;
    e.ejectedUntil = now + durationMs;
    e.consecutiveGatewayErrors = 0;
    e.consecutive5xx = 0;
    this.#ejected++;
    this.#timers.set(e, setTimeout(returnFromEjection, durationMs, this, e).unref());
    this.#hooks.onEject(e, reason, durationMs);
  }

  /**
   * Take over an endpoint ejected by the detector of the cluster this one replaces on a reload:
   * it counts against the cap and returns when that ejection was due to end.
   */
  adopt(e: Endpoint, now: number): void {
    if (!e.ejected || this.#timers.has(e)) return;
    this.#ejected++;
    this.#timers.set(e, setTimeout(returnFromEjection, Math.max(0, e.ejectedUntil - now), this, e).unref());
  }

  /** The upstream's endpoint set changed size: the ejection cap is a share of it. */
  resize(endpointCount: number): void {
    this.#endpointCount = endpointCount;
  }

  /** An endpoint left the upstream: its ejection, if any, no longer counts against the cap. */
  forget(e: Endpoint): void {
    const timer = this.#timers.get(e);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.#timers.delete(e);
    this.#ejected--;
  }

  /** End an ejection (its timer fired). */
  restore(e: Endpoint): void {
    const timer = this.#timers.get(e);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.#timers.delete(e);
    e.ejected = false;
    e.returnedAt = this.#now();
    this.#ejected--;
    if (!this.#closed) this.#hooks.onReturn(e);
  }

  close(): void {
    this.#closed = true;
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
  }
}
