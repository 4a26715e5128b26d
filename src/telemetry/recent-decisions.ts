/**
 * The last N responses the gateway made itself (problem+json: refusals and local failures), for
 * `GET /v1/decisions/recent` and the status page: "why was this request refused" answered without a
 * log search, each with the trace id that leads to the rest.
 *
 * A ring of columns allocated once. Recording stores a timestamp, a status and references to
 * strings the request already holds (code, route, ids): nothing is allocated per refusal, and it
 * is called only where a local response is counted, never on the success path.
 */

export interface RecentDecision {
  /** When the response was made (ISO 8601). */
  readonly at: string;
  readonly status: number;
  /** The error code: the `x-peregrine-reason` header and the problem's `code`. */
  readonly code: string;
  /** null: refused before a route matched. */
  readonly route: string | null;
  readonly upstream: string | null;
  readonly listener: string;
  readonly traceId: string;
  /** Whether the trace was sampled (exported): only then does a trace backend have it. */
  readonly sampled: boolean;
  readonly requestId: string;
}

/** Default number of decisions kept (`admin.recentDecisions`). */
export const RECENT_DECISIONS = 100;

export class RecentDecisions {
  readonly capacity: number;
  /** Decisions recorded since start; the next goes to slot `#total % capacity`. */
  #total = 0;
  readonly #at: Float64Array;
  readonly #status: Uint16Array;
  readonly #sampled: Uint8Array;
  readonly #code: string[];
  readonly #route: (string | undefined)[];
  readonly #upstream: (string | undefined)[];
  readonly #listener: string[];
  readonly #traceId: string[];
  readonly #requestId: string[];

  /** `capacity` 0 keeps nothing. */
  constructor(capacity: number = RECENT_DECISIONS) {
    if (!Number.isInteger(capacity) || capacity < 0) throw new RangeError(`capacity ${capacity}`);
    this.capacity = capacity;
    this.#at = new Float64Array(capacity);
    this.#status = new Uint16Array(capacity);
    this.#sampled = new Uint8Array(capacity);
    this.#code = new Array<string>(capacity).fill('');
    this.#route = new Array<string | undefined>(capacity).fill(undefined);
    this.#upstream = new Array<string | undefined>(capacity).fill(undefined);
    this.#listener = new Array<string>(capacity).fill('');
    this.#traceId = new Array<string>(capacity).fill('');
    this.#requestId = new Array<string>(capacity).fill('');
  }

  /** Responses recorded since start (also those no longer kept). */
  get total(): number {
    return this.#total;
  }

  record(
    listener: string,
    route: string | undefined,
    upstream: string | undefined,
    status: number,
    code: string,
    traceId: string,
    sampled: boolean,
    requestId: string,
  ): void {
    if (this.capacity === 0) return;
    const i = this.#total % this.capacity;
    this.#total++;
    this.#at[i] = Date.now();
    this.#status[i] = status;
    this.#sampled[i] = sampled ? 1 : 0;
    this.#code[i] = code;
    this.#route[i] = route;
    this.#upstream[i] = upstream;
    this.#listener[i] = listener;
    this.#traceId[i] = traceId;
    this.#requestId[i] = requestId;
  }

  /** The kept decisions, newest first, at most `limit`. */
  recent(limit = this.capacity): RecentDecision[] {
    const n = Math.min(this.#total, this.capacity, Math.max(0, limit));
    const out: RecentDecision[] = [];
    for (let k = 1; k <= n; k++) {
      const i = (this.#total - k) % this.capacity;
      out.push({
        at: new Date(this.#at[i]!).toISOString(),
        status: this.#status[i]!,
        code: this.#code[i]!,
        route: this.#route[i] ?? null,
        upstream: this.#upstream[i] ?? null,
        listener: this.#listener[i]!,
        traceId: this.#traceId[i]!,
        sampled: this.#sampled[i] === 1,
        requestId: this.#requestId[i]!,
      });
    }
    return out;
  }
}
