/**
 * The bench's side of the registration API (docs/registry.md): calls over a few keep-alive
 * connections with the bench token, the watch stream of one gateway with the arrival time of each
 * event, and the upstream registered with Peregrine's own client.
 */
import type { Readable } from 'node:stream';
import { Pool } from 'undici';
import { RegistrationClient } from '../../src/registry/client.ts';
import { BENCH_SERVICE } from './peregrine-config.ts';
import { benchRegistryToken } from './registry-config.ts';
import { type SseEvent, SseReader } from './sse.ts';

export interface ApiAnswer {
  readonly status: number;
  readonly json: Record<string, unknown> | undefined;
}

/** Calls to one gateway's registration API. */
export class RegistryCaller {
  readonly #pool: Pool;
  readonly #headers: Record<string, string>;

  constructor(origin: string, connections = 4, token: string = benchRegistryToken()) {
    this.#pool = new Pool(origin, { connections, keepAliveTimeout: 30_000 });
    this.#headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  }

  async call(method: 'PUT' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<ApiAnswer> {
    const res = await this.#pool.request({
      method,
      path,
      headers: this.#headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
    return { status: res.statusCode, json: jsonObject(await res.body.text()) };
  }

  register(service: string, id: string, spec: Record<string, unknown>): Promise<ApiAnswer> {
    return this.call('PUT', instancePath(service, id), spec);
  }

  drain(service: string, id: string): Promise<ApiAnswer> {
    return this.call('POST', `${instancePath(service, id)}/drain`);
  }

  deregister(service: string, id: string): Promise<ApiAnswer> {
    return this.call('DELETE', instancePath(service, id));
  }

  close(): Promise<void> {
    return this.#pool.close();
  }
}

/** The answer's JSON body; undefined when empty (204) or not JSON. */
function jsonObject(text: string): Record<string, unknown> | undefined {
  if (!text) return undefined;
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

function instancePath(service: string, id: string): string {
  return `/v1/services/${encodeURIComponent(service)}/instances/${encodeURIComponent(id)}`;
}

/** A `change` event of the watch stream (docs/registry.md, "Watching"). */
export interface WatchChange {
  readonly type: 'upsert' | 'remove';
  readonly cause: string;
  readonly instance: { readonly service: string; readonly id: string; readonly state: string };
}

export interface RegistryWatch {
  close(): void;
}

/**
 * Follow `service` on a gateway's watch stream; `onChange` gets each change with
 * performance.now() at its arrival. Resolves once the stream's snapshot has arrived (from then
 * on, no change is missed).
 */
export async function watchRegistry(
  origin: string,
  service: string,
  onChange: (change: WatchChange, at: number) => void,
  token: string = benchRegistryToken(),
): Promise<RegistryWatch> {
  const pool = new Pool(origin, { connections: 1 });
  const res = await pool.request({
    method: 'GET',
    path: `/v1/watch?service=${encodeURIComponent(service)}`,
    headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
    bodyTimeout: 0,
  });
  if (res.statusCode !== 200) {
    const text = await res.body.text();
    await pool.close();
    throw new Error(`watch on ${origin} answered ${res.statusCode}: ${text.slice(0, 300)}`);
  }
  const body = res.body as unknown as Readable;
  body.setEncoding('utf8');
  const reader = new SseReader();
  await new Promise<void>((resolve, reject) => {
    let snapshot = false;
    body.on('data', (chunk: string) => {
      const at = performance.now();
      for (const e of reader.push(chunk)) {
        if (e.event === 'snapshot' && !snapshot) {
          snapshot = true;
          resolve();
        } else if (e.event === 'change') onChange(parseChange(e), at);
      }
    });
    body.once('error', reject);
    body.once('end', () => reject(new Error(`watch on ${origin} ended`)));
  });
  return {
    close() {
      body.removeAllListeners('end');
      body.on('error', () => {});
      body.destroy();
      void pool.destroy();
    },
  };
}

function parseChange(e: SseEvent): WatchChange {
  return JSON.parse(e.data) as WatchChange;
}

/**
 * Register the bench upstream (`origin`, on 127.0.0.1) as an instance of `service` with Peregrine's
 * client: a 5-minute lease it renews, removed on close without a drain delay.
 */
export async function registerBenchUpstream(
  registry: string,
  origin: string,
  service: string = BENCH_SERVICE,
): Promise<RegistrationClient> {
  const client = new RegistrationClient({
    registry,
    service,
    id: 'bench-upstream',
    address: '127.0.0.1',
    port: Number(new URL(origin).port),
    token: benchRegistryToken(),
    ttlMs: 300_000,
    drainDelayMs: 0,
  });
  await client.start();
  return client;
}
