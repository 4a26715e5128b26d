/**
 * What the gateway says about the answers it makes itself: every refusal, the HTTP parser's
 * included, carries a request id and a trace id that the body, the access line and the trace share,
 * and its body bytes are counted like any other response's.
 */
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { rawExchange, rawRequest, statusCodes } from '../helpers/raw-http.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let up: TestUpstream;
let gw: TestGateway;
const exporter = new InMemorySpanExporter();
const processor = new SimpleSpanProcessor(exporter);

beforeAll(async () => {
  up = await startUpstream();
  gw = await startGateway(
    {
      listeners: [{ name: 'edge', address: '127.0.0.1:0', limits: { maxHeaderSize: '8KiB' } }],
      telemetry: { tracing: { sampleRatio: 1 } },
      upstreams: { main: { endpoints: [up.url] } },
      routes: [
        // /sink reads the whole body before answering: a broken body leaves the attempt waiting.
        { name: 'sink', match: { path: '/sink' }, upstream: 'main' },
        { name: 'main', match: { path: '/api' }, upstream: 'main' },
      ],
    },
    { spanProcessor: processor },
  );
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
});

const HEX32 = /^[0-9a-f]{32}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface Problem {
  code: string;
  traceId?: string;
  requestId?: string;
}

/** Every response in a raw stream: status, headers (lower-case names) and body (by content-length). */
function responses(raw: string): { status: number; headers: Record<string, string>; body: string }[] {
  const out = [];
  let rest = raw;
  while (rest.startsWith('HTTP/1.1 ')) {
    const end = rest.indexOf('\r\n\r\n');
    const [statusLine, ...lines] = rest.slice(0, end).split('\r\n');
    const headers: Record<string, string> = {};
    for (const l of lines) {
      const i = l.indexOf(':');
      headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    const length = Number(headers['content-length'] ?? 0);
    const body = rest.slice(end + 4, end + 4 + length);
    out.push({ status: Number(statusLine!.split(' ')[1]), headers, body });
    rest = rest.slice(end + 4 + length);
  }
  return out;
}

async function responseBodyBytes(route: string): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const line = text
    .split('\n')
    .find((l) => l.startsWith(`peregrine_response_body_bytes_total{route="${route}"}`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

describe('refusals by the HTTP parser', () => {
  it.each([
    ['400', 'GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n', 400, 'BAD_REQUEST'],
    ['431', `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(10_000)}\r\n\r\n`, 431, 'HEADERS_TOO_LARGE'],
  ])(
    '%s: the body, the access line, the span and the byte count agree',
    async (_name, payload, status, code) => {
      const bytesBefore = await responseBodyBytes('_none');
      const [res] = responses(await rawRequest(gw.port, payload));
      expect(res!.status).toBe(status);
      const problem = JSON.parse(res!.body) as Problem;
      expect(problem.code).toBe(code);
      expect(problem.traceId).toMatch(HEX32);
      expect(problem.requestId).toMatch(UUID);
      expect(res!.headers['x-request-id']).toBe(problem.requestId);
      expect(res!.headers['x-peregrine-reason']).toBe(code);

      const line = gw.logs.access().find((l) => l.requestId === problem.requestId);
      expect(line).toMatchObject({
        status,
        code,
        trace_id: problem.traceId,
        responseBytes: Buffer.byteLength(res!.body),
      });
      expect(await responseBodyBytes('_none')).toBe(bytesBefore + Buffer.byteLength(res!.body));

      // Sampled like any root: a SERVER span with that trace id, a 4xx so no error status. (Spans
      // ended before the resource's asynchronous attributes are known are exported once they are.)
      await processor.forceFlush();
      const span = exporter.getFinishedSpans().find((s) => s.spanContext().traceId === problem.traceId);
      expect(span?.attributes).toMatchObject({ 'http.response.status_code': status, 'peregrine.code': code });
      expect(span?.spanContext().spanId).toBe(line!.span_id);
    },
  );

  it('gives the ids to a refusal that waits for earlier pipelined responses', async () => {
    const good = 'GET /api/p HTTP/1.1\r\nHost: a\r\n\r\n';
    const raw = await rawRequest(gw.port, `${good}GET /api/p HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n`);
    expect(statusCodes(raw)).toEqual([200, 400]);
    const refusal = responses(raw)[1]!;
    const problem = JSON.parse(refusal.body) as Problem;
    expect(problem.traceId).toMatch(HEX32);
    expect(problem.requestId).toMatch(UUID);
    expect(gw.logs.access().find((l) => l.requestId === problem.requestId)).toMatchObject({
      status: 400,
      trace_id: problem.traceId,
      responseBytes: Buffer.byteLength(refusal.body),
    });
  });
});

describe('refusals of broken HTTP/1.1 framing', () => {
  /** The one response of `raw`, checked to carry the ids, with its access line. */
  function refusal(raw: string, route: string) {
    const [res, ...more] = responses(raw);
    // The raw stream is read as latin1: one character per byte.
    const bytes = Buffer.byteLength(res!.body, 'latin1');
    expect(more).toEqual([]);
    expect(res!.status).toBe(400);
    const problem = JSON.parse(res!.body) as Problem;
    expect(problem.code).toBe('BAD_REQUEST');
    expect(problem.traceId).toMatch(HEX32);
    expect(problem.requestId).toMatch(UUID);
    expect(res!.headers['x-request-id']).toBe(problem.requestId);
    const line = gw.logs.access().find((l) => l.requestId === problem.requestId);
    expect(line).toMatchObject({
      status: 400,
      code: 'BAD_REQUEST',
      trace_id: problem.traceId,
      responseBytes: bytes,
    });
    expect(line!.route ?? '_none').toBe(route);
    return { problem, bytes };
  }

  it('a Transfer-Encoding other than chunked: ids in the body and the access line, bytes counted', async () => {
    const bytesBefore = await responseBodyBytes('_none');
    const { raw } = await rawExchange(
      gw.port,
      'POST /api/te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n',
    );
    const { problem, bytes } = refusal(raw, '_none');
    expect(await responseBodyBytes('_none')).toBe(bytesBefore + bytes);
    await processor.forceFlush();
    const server = exporter.getFinishedSpans().find((s) => s.spanContext().traceId === problem.traceId);
    expect(server?.attributes).toMatchObject({
      'http.response.status_code': 400,
      'peregrine.code': 'BAD_REQUEST',
    });
  });

  it("a chunk that breaks mid-body: the attempt it cut ends as the client's, the 400 carries the ids", async () => {
    const seenBefore = up.requests.length;
    const bytesBefore = await responseBodyBytes('sink');
    const { raw } = await rawExchange(
      gw.port,
      'POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n',
      1500,
      // Once the upstream has the head: the attempt is under way when the body breaks.
      { ready: () => up.requests.length > seenBefore, payload: 'zz\r\nhello\r\n0\r\n\r\n' },
    );
    expect(up.requests.length).toBe(seenBefore + 1);
    const { problem, bytes } = refusal(raw, 'sink');
    expect(await responseBodyBytes('sink')).toBe(bytesBefore + bytes);

    await processor.forceFlush();
    const spans = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === problem.traceId);
    const server = spans.find((s) => s.kind === SpanKind.SERVER);
    const client = spans.find((s) => s.kind === SpanKind.CLIENT);
    expect(server?.attributes).toMatchObject({
      'http.response.status_code': 400,
      'peregrine.code': 'BAD_REQUEST',
    });
    expect(server?.status.code).toBe(SpanStatusCode.UNSET);
    // A failed attempt (ERROR), and the outcome says whose doing it was.
    expect(client?.status.code).toBe(SpanStatusCode.ERROR);
    expect(client?.attributes).toMatchObject({
      'error.type': 'BAD_REQUEST',
      'peregrine.outcome': 'client_error',
    });
  });
});

describe('problem responses of the pipeline', () => {
  it('count their body in the access line and in peregrine_response_body_bytes_total', async () => {
    const bytesBefore = await responseBodyBytes('_none');
    const res = await fetch(`${gw.url}/nowhere`);
    expect(res.status).toBe(404);
    const body = await res.text();
    const line = gw.logs.access().find((l) => l.requestId === res.headers.get('x-request-id'));
    expect(line).toMatchObject({ code: 'ROUTE_NOT_FOUND', responseBytes: Buffer.byteLength(body) });
    expect(await responseBodyBytes('_none')).toBe(bytesBefore + Buffer.byteLength(body));
  });

  it('count nothing for a HEAD request, which gets no body', async () => {
    const res = await fetch(`${gw.url}/nowhere`, { method: 'HEAD' });
    expect(res.status).toBe(404);
    const line = gw.logs.access().find((l) => l.requestId === res.headers.get('x-request-id'));
    expect(line).toMatchObject({ code: 'ROUTE_NOT_FOUND', responseBytes: 0 });
  });
});

describe('refused WebSocket upgrades', () => {
  it('count the body of the refusal in the access line and in peregrine_response_body_bytes_total', async () => {
    const bytesBefore = await responseBodyBytes('_none');
    const [res] = responses(
      await rawRequest(
        gw.port,
        'GET /nowhere HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
          'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      ),
    );
    expect(res!.status).toBe(404);
    const problem = JSON.parse(res!.body) as Problem;
    expect(problem.requestId).toBe(res!.headers['x-request-id']);
    expect(gw.logs.access().find((l) => l.requestId === problem.requestId)).toMatchObject({
      status: 404,
      code: 'ROUTE_NOT_FOUND',
      responseBytes: Buffer.byteLength(res!.body),
    });
    expect(await responseBodyBytes('_none')).toBe(bytesBefore + Buffer.byteLength(res!.body));
  });
});
