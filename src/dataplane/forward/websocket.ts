/**
 * WebSocket upgrades, proxied end to end: the handshake goes to the upstream through the same
 * route table and header hygiene as any request; once the upstream answers 101 the two sockets are
 * joined byte for byte. Anything other than 101 is relayed to the client as a normal response.
 */

import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { STATUS_CODES } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import type { Dispatcher } from 'undici';
import { asGatewayError, type ErrorCode, GatewayError } from '../../errors.ts';
import { accessRecord } from '../../telemetry/access-log.ts';
import type { WebSocketOutcome } from '../../telemetry/metrics.ts';
import { peerIdentityOf } from '../../tls/peer-identity.ts';
import { RequestContext } from '../context.ts';
import type { RequestFilter } from '../filters/filter.ts';
import { assertHostPresent, type Pipeline, requestIdOf } from '../pipeline.ts';
import { rawProblem, writeRawProblem } from '../respond.ts';
import { normalizePath } from '../routing/path-normalize.ts';
import type { EndpointDispatchOptions } from '../upstream/endpoint.ts';
import { buildUpstreamHeaders, cleanResponseHeaders } from './headers.ts';
import { plainAddress } from './trusted-proxies.ts';
import { classifyUpstreamError } from './upstream-errors.ts';

/** Node's `shouldUpgradeCallback`: only WebSocket upgrades leave the HTTP request path. */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  const upgrade = req.headers.upgrade;
  return typeof upgrade === 'string' && upgrade.toLowerCase() === 'websocket' && req.method === 'GET';
}

function headBlock(statusCode: number, headers: IncomingHttpHeaders): string {
  let out = `HTTP/1.1 ${statusCode} ${STATUS_CODES[statusCode] ?? ''}\r\n`;
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) out += `${name}: ${v}\r\n`;
    else out += `${name}: ${value}\r\n`;
  }
  return `${out}\r\n`;
}

function destroyBoth(a: Duplex, b: Duplex): void {
  a.destroy();
  b.destroy();
}

class UpgradeHandler implements Dispatcher.DispatchHandler {
  readonly client: Duplex;
  readonly head: Buffer;
  readonly onDone: (
    outcome: WebSocketOutcome,
    status: number,
    code: ErrorCode | undefined,
    responseBytes: number,
  ) => void;
  readonly reasonHeader: string | false;
  readonly requestId: string;
  #done = false;

  constructor(
    client: Duplex,
    head: Buffer,
    onDone: (
      outcome: WebSocketOutcome,
      status: number,
      code: ErrorCode | undefined,
      responseBytes: number,
    ) => void,
    reasonHeader: string | false,
    requestId: string,
  ) {
    this.client = client;
    this.head = head;
    this.reasonHeader = reasonHeader;
    this.requestId = requestId;
    this.onDone = onDone;
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    // A client that leaves during the handshake cancels it.
    this.client.once('close', () => {
      if (!this.#done) controller.abort(new GatewayError('CLIENT_CLOSED'));
    });
  }

  onRequestUpgrade(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
    upstream: Duplex,
  ): void {
    this.#done = true;
    const client = this.client;
    if (client.destroyed) {
      upstream.destroy();
      this.onDone('client_abort', statusCode, 'CLIENT_CLOSED', 0);
      return;
    }
    const connection = headers.connection;
    const upgrade = headers.upgrade;
    cleanResponseHeaders(headers);
    headers.connection = typeof connection === 'string' ? connection : 'Upgrade';
    headers.upgrade = typeof upgrade === 'string' ? upgrade : 'websocket';
    client.write(headBlock(statusCode, headers));
    if (this.head.length > 0) upstream.write(this.head);
    upstream.on('error', () => destroyBoth(client, upstream));
    client.on('error', () => destroyBoth(client, upstream));
    upstream.on('close', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.pipe(client);
    client.pipe(upstream);
    this.onDone('success', statusCode, undefined, 0);
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
  ): void {
    cleanResponseHeaders(headers);
    headers.connection = 'close';
    if (!this.client.destroyed) this.client.write(headBlock(statusCode, headers));
    this.statusCode = statusCode;
  }

  statusCode = 0;
  /** Body bytes sent to the client: a relayed refusal's, or the gateway's own problem. */
  responseBytes = 0;

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.client.destroyed) return;
    this.client.write(chunk);
    this.responseBytes += chunk.length;
  }

  onResponseEnd(): void {
    this.#done = true;
    this.client.end();
    this.onDone('rejected', this.statusCode, undefined, this.responseBytes);
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    if (this.#done) return;
    this.#done = true;
    const { error: gwError, outcome } = classifyUpstreamError(error);
    if (this.statusCode === 0)
      this.responseBytes += writeRawProblem(
        this.client,
        rawProblem(gwError.code, { requestId: this.requestId }),
        this.reasonHeader,
      );
    else this.client.destroy();
    this.onDone(outcome, this.statusCode || gwError.status, gwError.code, this.responseBytes);
  }
}

interface UpgradeRecord {
  readonly startedAt: number;
  readonly requestId: string;
  readonly clientAddress: string;
  /** Verified mTLS identity of the connection (TLS listeners). */
  readonly clientIdentity: string | undefined;
  path: string;
  route: string | undefined;
  upstream: string | undefined;
  endpoint: string | undefined;
  /** Body bytes sent to the client (a refusal's problem, or the upstream's non-101 answer). */
  responseBytes: number;
}

/**
 * One handshake = one request in the telemetry: requests_total, the upgrade counter, a local
 * response when the gateway refused it, and an access-log line.
 */
function recordUpgrade(
  pipeline: Pipeline,
  req: IncomingMessage,
  rec: UpgradeRecord,
  outcome: WebSocketOutcome,
  status: number,
  code: ErrorCode | undefined,
): void {
  const { metrics, accessLog } = pipeline.telemetry;
  const ms = performance.now() - rec.startedAt;
  metrics.recordWebSocketUpgrade(rec.route, outcome);
  metrics.recordRequest(pipeline.listener.name, rec.route, 'GET', status, ms / 1000, undefined);
  if (code) {
    metrics.recordLocalResponse(rec.route, code);
    // A handshake has no span of its own here: no trace id to show.
    pipeline.telemetry.decisions.record(
      pipeline.listener.name,
      rec.route,
      rec.upstream,
      status,
      code,
      '',
      false,
      rec.requestId,
    );
  }
  metrics.recordBytes(rec.route, 0, rec.responseBytes);
  if (accessLog.enabled)
    accessLog.log(
      accessRecord(
        pipeline.listener.name,
        rec.route,
        rec.upstream,
        rec.endpoint,
        'GET',
        status,
        ms,
        req.headers['user-agent'],
        {
          path: rec.path,
          requestId: rec.requestId,
          clientAddress: rec.clientAddress,
          code,
          attempts: rec.endpoint ? 1 : 0,
          identity: rec.clientIdentity,
          responseBytes: rec.responseBytes,
        },
      ),
    );
}

/** Run a route's filters (mTLS identity, JWT) for a handshake; throws the refusal. */
async function runFilters(filters: readonly RequestFilter[], ctx: RequestContext): Promise<void> {
  for (const filter of filters) {
    const pending = filter.onRequest(ctx);
    if (pending !== undefined) await pending;
  }
}

/** The `upgrade` listener of a listener's HTTP server. */
export function handleUpgrade(pipeline: Pipeline, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  socket.on('error', () => socket.destroy());
  const peer = pipeline.listener.proto === 'https' ? peerIdentityOf(req.socket) : undefined;
  const rec: UpgradeRecord = {
    startedAt: performance.now(),
    requestId: requestIdOf(req),
    clientAddress: plainAddress(req.socket.remoteAddress),
    clientIdentity: peer?.id,
    path: '-',
    route: undefined,
    upstream: undefined,
    endpoint: undefined,
    responseBytes: 0,
  };
  const refuse = (err: unknown): void => {
    const error = asGatewayError(err);
    rec.responseBytes = writeRawProblem(
      socket,
      rawProblem(error.code, { requestId: rec.requestId }),
      pipeline.listener.reasonHeader,
      error.headers,
    );
    recordUpgrade(pipeline, req, rec, 'refused', error.status, error.code);
  };
  try {
    if (pipeline.host.draining) throw new GatewayError('SHUTTING_DOWN');
    assertHostPresent(req);
    const target = normalizePath(req.url ?? '/');
    if ('error' in target) throw new GatewayError('BAD_REQUEST', `invalid request target (${target.error})`);
    rec.path = target.path;
    const snapshot = pipeline.host.currentSnapshot();
    const match = snapshot.routes.match(req.headers.host, target.path, 'GET', req.headers);
    if (!match) throw new GatewayError('ROUTE_NOT_FOUND');
    const route = match.route;
    rec.route = route.name;
    rec.upstream = route.upstream;
    const plan = snapshot.plans.get(route.name);
    // A handshake passes the same filters as any request on the route (mTLS allow-list, JWT).
    const ctx = new RequestContext(req, undefined as unknown as ServerResponse, snapshot, rec.startedAt);
    ctx.requestId = rec.requestId;
    ctx.clientAddress = rec.clientAddress;
    ctx.identity = peer?.id;
    const proceed = (): void => {
      const cluster = snapshot.clusters.get(route.upstream);
      const endpoint = cluster?.balancer.pick();
      if (!cluster || !endpoint) throw new GatewayError('NO_HEALTHY_ENDPOINT');
      rec.endpoint = endpoint.id;
      const headers = buildUpstreamHeaders(req.rawHeaders, {
        trusted: pipeline.listener.trust(rec.clientAddress),
        peerAddress: rec.clientAddress,
        proto: pipeline.listener.proto,
        upstreamHost: route.hostRewrite ?? (route.preserveHost ? undefined : endpoint.host),
        requestId: rec.requestId,
        underscores: pipeline.listener.underscores,
        clientCert: peer?.xfcc,
        strip: plan?.stripHeaders ?? undefined,
      });
      if (ctx.upstreamHeaders) for (const h of ctx.upstreamHeaders) headers.push(h);
      const path = route.rewritePath(target.path);
      const opts: EndpointDispatchOptions = {
        method: 'GET',
        path: path + target.query,
        headers,
        upgrade: 'websocket',
        body: null,
        servername: endpoint.servername,
      };
      endpoint.pool.dispatch(
        opts,
        new UpgradeHandler(
          socket,
          head,
          (outcome, status, code, responseBytes) => {
            rec.responseBytes = responseBytes;
            recordUpgrade(pipeline, req, rec, outcome, status, code);
          },
          pipeline.listener.reasonHeader,
          rec.requestId,
        ),
      );
    };
    if (!plan?.filters) {
      proceed();
      return;
    }
    runFilters(plan.filters, ctx).then(() => {
      if (socket.destroyed) return;
      try {
        proceed();
      } catch (err) {
        refuse(err);
      }
    }, refuse);
  } catch (err) {
    refuse(err);
  }
}
