/**
 * The spans of one sampled request as the pipeline makes them (begin, route, attempt, finish),
 * for the micro-benchmarks that price tracing and span export.
 */
import {
  attemptSpanAttributes,
  endClientSpan,
  endServerSpan,
  routeServerSpan,
  setServerQuery,
  type Tracing,
} from '../../src/telemetry/tracing.ts';

const HEADERS = { host: 'api.example.com', 'user-agent': 'wrk/4.1.0', accept: '*/*' };

export function pipelineSpans(t: Tracing, requestId: string): void {
  const server = t.startServerSpan('GET', HEADERS, {
    'url.scheme': 'http',
    'client.address': '127.0.0.1',
    'network.protocol.version': '1.1',
  });
  routeServerSpan(server, 'GET', '/*', 'all');
  const client = t.startClientSpan(
    server,
    'GET bench',
    attemptSpanAttributes('GET', 'http://127.0.0.1:3001', '127.0.0.1', 3001, '/', '', 'bench', 0),
  );
  const headers: string[] = [];
  t.injectInto(client, headers);
  endClientSpan(client, 200, undefined);
  server.setAttribute('url.path', '/');
  setServerQuery(server, '');
  server.setAttribute('peregrine.request_id', requestId);
  endServerSpan(server, 200, undefined);
}
