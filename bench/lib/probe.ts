/**
 * A latency probe: one keep-alive connection sending GETs back to back to one URL, recording how
 * long each took. While the gateway's event loop is stopped (a reload, a scrape), the request in
 * flight waits, so the longest probe latency in a window is the longest pause a request saw.
 */
import { Agent, request } from 'node:http';

export interface ProbeSample {
  /** performance.now() when the request was sent. */
  readonly at: number;
  readonly ms: number;
  readonly status: number;
}

export class Probe {
  readonly samples: ProbeSample[] = [];
  #running = true;
  readonly #agent = new Agent({ keepAlive: true, maxSockets: 1 });
  readonly #done: Promise<void>;

  constructor(url: string, headers: Record<string, string> = {}) {
    this.#done = this.#loop(url, headers);
  }

  async #loop(url: string, headers: Record<string, string>): Promise<void> {
    while (this.#running) {
      const at = performance.now();
      const status = await get(url, this.#agent, headers);
      this.samples.push({ at, ms: performance.now() - at, status });
      // A short gap, so the probe costs the gateway little and still samples every few ms.
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  /** Samples in flight at some time within [from, to]. */
  between(from: number, to: number): ProbeSample[] {
    return this.samples.filter((s) => s.at <= to && s.at + s.ms >= from);
  }

  async stop(): Promise<void> {
    this.#running = false;
    await this.#done;
    this.#agent.destroy();
  }
}

function get(url: string, agent: Agent, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve) => {
    const req = request(url, { agent, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', () => resolve(0));
    });
    req.on('error', () => resolve(0));
    req.end();
  });
}

/** The q-quantile (0..1) of `values` (nearest rank), undefined when empty. */
export function quantile(values: readonly number[], q: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}
