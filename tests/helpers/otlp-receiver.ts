/**
 * A minimal OTLP/HTTP trace receiver on 127.0.0.1:0 for tests: accepts POST /v1/traces with the
 * JSON encoding (what @opentelemetry/exporter-trace-otlp-http sends; gzip allowed) and keeps the
 * spans. Anything else (protobuf included) is answered 415 and recorded in `rejected()`, so a test
 * that expected spans fails with a reason instead of timing out silently.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';

export type ReceivedSpanKind = 'unspecified' | 'internal' | 'server' | 'client' | 'producer' | 'consumer';

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** Undefined for a root span. */
  parentSpanId: string | undefined;
  name: string;
  kind: ReceivedSpanKind;
  attributes: Record<string, unknown>;
  /** OTLP status code: 0 unset, 1 ok, 2 error. */
  status: { code: number; message: string | undefined };
  traceState: string | undefined;
  /** Attributes of the resource the span was exported under (service.name, ...). */
  resource: Record<string, unknown>;
  /** The instrumentation scope that made the span. */
  scope: { name: string; version: string | undefined };
}

export interface OtlpReceiver {
  /** Base URL, e.g. http://127.0.0.1:41234 — use it as the tracing `endpoint`. */
  url: string;
  spans(): ReceivedSpan[];
  /** Resolves once at least `n` spans arrived; rejects after `timeoutMs` (default 5000). */
  waitForSpans(n: number, timeoutMs?: number): Promise<ReceivedSpan[]>;
  /** Content types of the accepted export requests. */
  contentTypes(): string[];
  /** Requests that were refused, with the reason. */
  rejected(): string[];
  close(): Promise<void>;
}

const KINDS: readonly ReceivedSpanKind[] = [
  'unspecified',
  'internal',
  'server',
  'client',
  'producer',
  'consumer',
];

interface AnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: number | string;
  doubleValue?: number;
  arrayValue?: { values?: AnyValue[] };
  kvlistValue?: { values?: KeyValue[] };
  bytesValue?: string;
}

interface KeyValue {
  key: string;
  value?: AnyValue;
}

interface JsonSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  traceState?: string;
  name: string;
  kind?: number;
  attributes?: KeyValue[];
  status?: { code?: number; message?: string };
}

interface ExportRequest {
  resourceSpans?: {
    resource?: { attributes?: KeyValue[] };
    scopeSpans?: { scope?: { name?: string; version?: string }; spans?: JsonSpan[] }[];
  }[];
}

function decodeValue(v: AnyValue | undefined): unknown {
  if (v === undefined) return undefined;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.arrayValue !== undefined) return (v.arrayValue.values ?? []).map(decodeValue);
  if (v.kvlistValue !== undefined) return decodeAttributes(v.kvlistValue.values);
  if (v.bytesValue !== undefined) return Buffer.from(v.bytesValue, 'base64');
  return undefined;
}

function decodeAttributes(kvs: KeyValue[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const kv of kvs ?? []) out[kv.key] = decodeValue(kv.value);
  return out;
}

function decodeRequest(req: ExportRequest): ReceivedSpan[] {
  const spans: ReceivedSpan[] = [];
  for (const rs of req.resourceSpans ?? []) {
    const resource = decodeAttributes(rs.resource?.attributes);
    for (const ss of rs.scopeSpans ?? []) {
      const scope = { name: ss.scope?.name ?? '', version: ss.scope?.version || undefined };
      for (const s of ss.spans ?? []) {
        spans.push({
          traceId: s.traceId,
          spanId: s.spanId,
          parentSpanId: s.parentSpanId ? s.parentSpanId : undefined,
          name: s.name,
          kind: KINDS[s.kind ?? 0] ?? 'unspecified',
          attributes: decodeAttributes(s.attributes),
          status: { code: s.status?.code ?? 0, message: s.status?.message || undefined },
          traceState: s.traceState ? s.traceState : undefined,
          resource,
          scope,
        });
      }
    }
  }
  return spans;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const body = Buffer.concat(chunks);
  return req.headers['content-encoding'] === 'gzip' ? gunzipSync(body) : body;
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const contentTypes: string[] = [];
  const rejected: string[] = [];
  const waiters = new Set<() => void>();

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'POST' || req.url !== '/v1/traces') {
      rejected.push(`${req.method} ${req.url}`);
      res.writeHead(404).end();
      return;
    }
    const type = req.headers['content-type'] ?? '';
    const body = await readBody(req);
    if (!type.startsWith('application/json')) {
      rejected.push(
        `unsupported content-type ${JSON.stringify(type)} (this receiver decodes OTLP/JSON only)`,
      );
      res.writeHead(415).end();
      return;
    }
    try {
      spans.push(...decodeRequest(JSON.parse(body.toString('utf8')) as ExportRequest));
    } catch (err) {
      rejected.push(`undecodable body: ${(err as Error).message}`);
      res.writeHead(400).end();
      return;
    }
    contentTypes.push(type);
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    for (const wake of waiters) wake();
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      rejected.push(`handler failed: ${(err as Error).message}`);
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    spans: () => [...spans],
    contentTypes: () => [...contentTypes],
    rejected: () => [...rejected],
    waitForSpans(n, timeoutMs = 5000) {
      if (spans.length >= n) return Promise.resolve([...spans]);
      return new Promise((resolve, reject) => {
        const wake = (): void => {
          if (spans.length < n) return;
          clearTimeout(timer);
          waiters.delete(wake);
          resolve([...spans]);
        };
        const timer = setTimeout(() => {
          waiters.delete(wake);
          const why = rejected.length > 0 ? `; rejected: ${rejected.join('; ')}` : '';
          reject(new Error(`expected ${n} spans within ${timeoutMs} ms, got ${spans.length}${why}`));
        }, timeoutMs);
        waiters.add(wake);
      });
    },
    async close() {
      if (!server.listening) return;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
