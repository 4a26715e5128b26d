import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { type OtlpReceiver, startOtlpReceiver } from '../helpers/otlp-receiver.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let up: TestUpstream;
let otlp: OtlpReceiver;
let gw: TestGateway;

beforeAll(async () => {
  // Export promptly instead of the batch processor's default 5 s schedule.
  process.env.OTEL_BSP_SCHEDULE_DELAY = '50';
  up = await startUpstream();
  otlp = await startOtlpReceiver();
  gw = await startGateway({
    telemetry: {
      serviceName: 'peregrine-test',
      tracing: { exporter: 'otlp', endpoint: otlp.url, sampleRatio: 1 },
    },
    upstreams: { users: { endpoints: [up.url] }, dead: { endpoints: ['http://127.0.0.1:1'] } },
    routes: [
      { name: 'dead', match: { path: '/dead' }, upstream: 'dead' },
      { name: 'status', match: { path: '/s' }, upstream: 'users', rewrite: { stripPrefix: '/s' } },
      { name: 'users-api', match: { path: '/users' }, upstream: 'users' },
    ],
  });
});

afterAll(async () => {
  await gw?.close();
  await otlp?.close();
  await up?.close();
});

async function spansOfTrace(traceId: string, n: number) {
  const end = Date.now() + 10_000;
  for (;;) {
    // The batch processor exports on its schedule; the gateway's shutdown would flush, but we want
    // to see spans from a running gateway, so wait for them.
    const spans = otlp.spans().filter((s) => s.traceId === traceId);
    if (spans.length >= n) return spans;
    if (Date.now() > end) throw new Error(`only ${spans.length} spans of trace ${traceId} arrived`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('tracing through the gateway', () => {
  it('exports a SERVER span and a linked CLIENT span, and the upstream sees the client span as parent', async () => {
    const parentTrace = '4bf92f3577b34da6a3ce929d0e0e4736';
    const parentSpan = '00f067aa0ba902b7';
    const res = await fetch(`${gw.url}/users/42`, {
      headers: { traceparent: `00-${parentTrace}-${parentSpan}-01`, tracestate: 'vendor=x' },
    });
    expect(res.status).toBe(200);
    const seen = up.requests[up.requests.length - 1]!;
    const tp = String(seen.headers.traceparent).split('-');
    expect(tp[1]).toBe(parentTrace);

    const spans = await spansOfTrace(parentTrace, 2);
    const server = spans.find((s) => s.kind === 'server')!;
    const client = spans.find((s) => s.kind === 'client')!;
    expect(server.parentSpanId).toBe(parentSpan);
    expect(server.name).toBe('GET /users/*');
    expect(server.attributes['http.route']).toBe('/users/*');
    expect(server.attributes['peregrine.route']).toBe('users-api');
    expect(server.attributes['http.response.status_code']).toBe(200);
    expect(server.resource['service.name']).toBe('peregrine-test');
    expect(server.attributes['peregrine.request_id']).toBe(res.headers.get('x-request-id'));
    const decisions = server.attributes['peregrine.decisions'] as string[];
    expect(decisions[0]).toBe('route: users-api (priority 0)');
    expect(decisions[1]).toMatch(/^endpoint: http:\/\/127\.0\.0\.1:\d+ by \w+, attempt 1$/);
    expect(client.parentSpanId).toBe(server.spanId);
    expect(client.attributes['peer.service']).toBe('users');
    expect(client.attributes['http.request.resend_count']).toBeUndefined();
    expect(client.attributes['http.response.status_code']).toBe(200);
    // The upstream's parent is the client span: the trace continues across the hop.
    expect(tp[2]).toBe(client.spanId);

    // The access log line carries the same trace id.
    const line = gw.logs.access().find((l) => l.trace_id === parentTrace);
    expect(line).toMatchObject({
      route: 'users-api',
      upstream: 'users',
      status: 200,
      span_id: server.spanId,
      trace_flags: '01',
    });
  });

  it('starts a new trace when none comes in, accepts B3 input, and marks failed attempts as errors', async () => {
    const b3Trace = '80f198ee56343ba864fe8b2a57d3eff7';
    await fetch(`${gw.url}/users/b3`, { headers: { b3: `${b3Trace}-e457b5a2e4d86bd1-1` } });
    const b3Spans = await spansOfTrace(b3Trace, 2);
    expect(b3Spans.find((s) => s.kind === 'server')!.parentSpanId).toBe('e457b5a2e4d86bd1');
    // B3 is accepted on input, never forwarded: the upstream gets W3C only.
    const seen = up.requests[up.requests.length - 1]!;
    expect(seen.headers.b3).toBeUndefined();
    expect(String(seen.headers.traceparent)).toContain(b3Trace);

    const res = await fetch(`${gw.url}/dead`);
    expect(res.status).toBe(502);
    const problem = (await res.json()) as { traceId: string };
    const spans = await spansOfTrace(problem.traceId, 2);
    const server = spans.find((s) => s.kind === 'server')!;
    const client = spans.find((s) => s.kind === 'client')!;
    expect(server.parentSpanId).toBeUndefined();
    expect(server.status.code).toBe(2);
    expect(client.status.code).toBe(2);
    expect(client.attributes['error.type']).toBe('UPSTREAM_CONNECT_FAILED');
    expect(server.attributes['error.type']).toBe('UPSTREAM_CONNECT_FAILED');
  });

  it('sets span status per the HTTP conventions: CLIENT errs on 4xx and 5xx, SERVER on 5xx only', async () => {
    const statusOf = async (path: string, status: number) => {
      const res = await fetch(`${gw.url}${path}`);
      expect(res.status).toBe(status);
      await res.arrayBuffer();
      const line = gw.logs.access().find((l) => l.requestId === res.headers.get('x-request-id'))!;
      const spans = await spansOfTrace(line.trace_id as string, line.upstream ? 2 : 1);
      return {
        server: spans.find((s) => s.kind === 'server')!,
        client: spans.find((s) => s.kind === 'client'),
      };
    };

    // An upstream 5xx relayed: both spans are errors, typed by the status.
    const failed = await statusOf('/s/status/503', 503);
    expect(failed.client!.status.code).toBe(2);
    expect(failed.client!.attributes).toMatchObject({
      'error.type': '503',
      'http.response.status_code': 503,
    });
    expect(failed.server.status.code).toBe(2);
    expect(failed.server.attributes).toMatchObject({ 'error.type': '503', 'http.response.status_code': 503 });

    // An upstream 4xx: the attempt is an error, the request served is not.
    const missing = await statusOf('/s/status/404', 404);
    expect(missing.client!.status.code).toBe(2);
    expect(missing.client!.attributes['error.type']).toBe('404');
    expect(missing.server.status.code).toBe(0);
    expect(missing.server.attributes['error.type']).toBeUndefined();

    // A local 4xx: status unset, the code recorded.
    const noRoute = await statusOf('/nowhere', 404);
    expect(noRoute.server.status.code).toBe(0);
    expect(noRoute.server.attributes['error.type']).toBeUndefined();
    expect(noRoute.server.attributes['peregrine.code']).toBe('ROUTE_NOT_FOUND');

    const ok = await statusOf('/users/ok', 200);
    expect(ok.client!.status.code).toBe(0);
    expect(ok.server.status.code).toBe(0);
  });
});
