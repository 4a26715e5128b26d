import { type Balancer, drawTwo, type PickContext, WeightedSampler } from './balancer.ts';
import type { Clock, Random } from './clock.ts';
import type { Endpoint } from './endpoint.ts';

/**
 * A failed attempt is recorded as this many times the current estimate (at least its own
 * latency), so an endpoint that fails fast does not look fast. Repeated failures compound up to
 * FAILURE_RTT_CAP_MS, from which the estimate decays back within a few decay periods: an endpoint
 * returning from ejection is eased back in rather than starved.
 */
const FAILURE_RTT_FACTOR = 4;
const FAILURE_RTT_CAP_MS = 1000;

/** Set an endpoint's estimate to `rttMs` as of `now` (new endpoint, before any response). */
export function initRtt(e: Endpoint, rttMs: number, now: number): void {
  e.rttMs = rttMs;
  e.rttAt = now;
}

/**
 * Record one attempt's latency (to the response head) in the endpoint's peak-sensitive EWMA:
 * a latency above the estimate replaces it at once; a lower one is blended in with weight
 * 1 - exp(-Δt/decay), Δt the time since the last update (Finagle's and Linkerd's PeakEwma).
 */
export function observeRtt(e: Endpoint, rttMs: number, failed: boolean, now: number, decayMs: number): void {
  const current = e.rttMs;
  const sample = failed ? Math.max(rttMs, Math.min(current * FAILURE_RTT_FACTOR, FAILURE_RTT_CAP_MS)) : rttMs;
  if (sample > current) e.rttMs = sample;
  else {
    const w = Math.exp(-Math.max(0, now - e.rttAt) / decayMs);
    e.rttMs = current * w + sample * (1 - w);
  }
  e.rttAt = now;
}

/**
 * The estimate at `now`: it decays toward zero while no response arrives, so an endpoint that was
 * slow once (or is new) is tried again rather than starved (tower's PeakEwma does the same).
 */
export function rttEstimate(e: Endpoint, now: number, decayMs: number): number {
  const dt = now - e.rttAt;
  return dt <= 0 ? e.rttMs : e.rttMs * Math.exp(-dt / decayMs);
}

/**
 * Peak-EWMA, Linkerd's latency-aware balancer: power of two choices (drawn by weight) on
 * cost = latency estimate × (attempts in flight + 1). Reacts within one response to an endpoint
 * turning slow, and routes around queueing before latency shows it.
 */
export class PeakEwmaBalancer implements Balancer {
  readonly kind = 'peak_ewma';
  readonly #now: Clock;
  readonly #random: Random;
  readonly #decayMs: number;
  #list: readonly Endpoint[] = [];
  #sampler = new WeightedSampler([]);
  readonly #pair: Endpoint[] = [];

  constructor(endpoints: readonly Endpoint[], opts: { now: Clock; random: Random; decayMs: number }) {
    this.#now = opts.now;
    this.#random = opts.random;
    this.#decayMs = opts.decayMs;
    this.update(endpoints);
  }

  pick(ctx?: PickContext): Endpoint | undefined {
    const list = this.#list;
    if (list.length <= 1) return list[0];
    const pair = this.#pair;
    drawTwo(list, this.#sampler, this.#random, ctx?.tried, pair);
    const a = pair[0]!;
    const b = pair[1]!;
    const now = this.#now();
    const costA = rttEstimate(a, now, this.#decayMs) * (a.inFlight + 1);
    const costB = rttEstimate(b, now, this.#decayMs) * (b.inFlight + 1);
    return costB < costA ? b : a;
  }

  update(endpoints: readonly Endpoint[]): void {
    this.#list = endpoints;
    this.#sampler = new WeightedSampler(endpoints);
  }
}
