/**
 * The request path, top to bottom:
 *
 *   accept → context (ids, server span) → normalise path → match route → pick endpoint
 *     → build upstream headers → attempt (client span, undici dispatch, streaming both ways)
 *     → finish (metrics, access log, span end)
 *
 * Everything here reads the immutable Snapshot captured when the request arrived.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { type Duplex, Transform, type TransformCallback } from 'node:stream';
import type { Span } from '@opentelemetry/api';
import { SpanStatusCode } from '@opentelemetry/api';
import type { Dispatcher } from 'undici';
import type { Snapshot } from '../control/snapshot.ts';
import { asGatewayError, type ErrorCode, GatewayError } from '../errors.ts';
import type { Telemetry } from '../telemetry/telemetry.ts';
import { RequestContext } from './context.ts';
import { type AttemptObserver, ResponseForwarder } from './forward/forwarder.ts';
import { buildUpstreamHeaders } from './forward/headers.ts';
import { plainAddress, type TrustCheck } from './forward/trusted-proxies.ts';
import type { AttemptOutcome } from './forward/upstream-errors.ts';
import { sendProblem, writeRawProblem } from './respond.ts';
import { normalizePath } from './routing/path-normalize.ts';
import type { Endpoint } from './upstream/endpoint.ts';

/** What the data plane needs from the running gateway. */
export interface DataplaneHost {
  readonly telemetry: Telemetry;
  currentSnapshot(): Snapshot;
  readonly draining: boolean;
  requestStarted(): void;
  requestFinished(): void;
}

export interface ListenerInfo {
  readonly name: string;
  readonly underscores: 'drop' | 'reject' | 'allow';
  readonly proto: 'http' | 'https';
  readonly trust: TrustCheck;
}

const kContext = Symbol('peregrine.context');
/** Requests of a keep-alive connection still being answered, and a parser error waiting for them. */
const kPending = Symbol('peregrine.pending');
const kDeferredError = Symbol('peregrine.deferredError');
type TrackedSocket = Duplex & { [kPending]?: number; [kDeferredError]?: ErrorCode };

/**
 * Called on a parser error. When earlier pipelined requests on this connection are still being
 * answered, the error response waits for them (good, good, bad → 200, 200, 400 + close);
 * otherwise it is written at once. Returns true when deferred.
 */
export function deferClientError(socket: Duplex, code: ErrorCode): boolean {
  const s = socket as TrackedSocket;
  if (!s[kPending]) return false;
  s[kDeferredError] = code;
  return true;
}
type ResponseWithContext = ServerResponse & { [kContext]?: RequestContext };

/** A client-supplied request id is kept only when it is this tame; otherwise a UUID replaces it. */
export const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;
const NO_ROUTE = '_none';

function requestIdOf(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID_RE.test(given) ? given : randomUUID();
}

function hasBody(req: IncomingMessage): boolean {
  const cl = req.headers['content-length'];
  if (cl !== undefined) return cl !== '0';
  return req.headers['transfer-encoding'] !== undefined;
}

/** Fires once per request when the response is finished or the connection went away. */
function onResponseClose(this: ResponseWithContext): void {
  const ctx = this[kContext];
  if (ctx) ctx.pipeline!.finish(ctx);
}

function onTotalTimeout(ctx: RequestContext): void {
  ctx.totalTimer = undefined;
  ctx.forwarder?.abort(new GatewayError('UPSTREAM_TIMEOUT', 'total request timeout exceeded'));
}

export class Pipeline implements AttemptObserver {
  readonly listener: ListenerInfo;
  readonly host: DataplaneHost;
  readonly telemetry: Telemetry;

  constructor(listener: ListenerInfo, host: DataplaneHost) {
    this.listener = listener;
    this.host = host;
    this.telemetry = host.telemetry;
    this.handle = this.handle.bind(this);
  }

  /** The `request` listener of the HTTP server. */
  handle(req: IncomingMessage, res: ServerResponse): void {
    const ctx = new RequestContext(req, res, this.host.currentSnapshot(), performance.now());
    ctx.pipeline = this;
    (res as ResponseWithContext)[kContext] = ctx;
    const socket = req.socket as TrackedSocket;
    ctx.socket = socket;
    socket[kPending] = (socket[kPending] ?? 0) + 1;
    res.once('close', onResponseClose);
    this.host.requestStarted();
    this.telemetry.metrics.requestStarted(this.listener.name);

    ctx.requestId = requestIdOf(req);
    ctx.clientAddress = plainAddress(req.socket.remoteAddress);
    const span = this.telemetry.tracing.startServerSpan(req.method ?? 'GET', req.headers, {
      'url.scheme': this.listener.proto,
      'client.address': ctx.clientAddress,
    });
    ctx.span = span;
    const ids = this.telemetry.tracing.traceIds(span);
    ctx.traceId = ids.traceId;
    ctx.spanId = ids.spanId;
    ctx.sampled = ids.sampled;

    try {
      this.route(ctx);
    } catch (err) {
      this.respondWithError(ctx, asGatewayError(err));
    }
  }

  route(ctx: RequestContext): void {
    const { req } = ctx;
    const target = normalizePath(originForm(req.url ?? '/'));
    if ('error' in target) throw new GatewayError('BAD_REQUEST', `invalid request target (${target.error})`);
    ctx.path = target.path;
    ctx.query = target.query;

    const method = req.method ?? 'GET';
    const match = ctx.snapshot.routes.match(req.headers.host, ctx.path, method, req.headers);
    if (!match) throw new GatewayError('ROUTE_NOT_FOUND');
    const route = match.route;
    ctx.route = route;
    const maxBody = route.config.limits?.maxBodySize ?? 0;
    if (maxBody > 0) {
      const declared = req.headers['content-length'];
      if (declared !== undefined && Number(declared) > maxBody)
        throw new GatewayError('PAYLOAD_TOO_LARGE', `request body exceeds ${maxBody} bytes`);
    }
    // The decision log is built for sampled requests only: it is read from their spans.
    if (ctx.sampled) ctx.decide('route', `${route.name} (priority ${route.priority})`);
    ctx.span?.updateName(`${method} ${route.name}`);
    ctx.span?.setAttribute('http.route', route.name);

    const cluster = ctx.snapshot.clusters.get(route.upstream);
    if (!cluster) throw new GatewayError('UPSTREAM_UNAVAILABLE', `upstream ${route.upstream} is not defined`);
    ctx.cluster = cluster;
    const total = cluster.config.timeouts.request;
    if (total > 0) ctx.totalTimer = setTimeout(onTotalTimeout, total, ctx);
    this.attempt(ctx);
  }

  attempt(ctx: RequestContext): void {
    const route = ctx.route!;
    const cluster = ctx.cluster!;
    const endpoint = cluster.balancer.pick();
    if (!endpoint) throw new GatewayError('NO_HEALTHY_ENDPOINT', `upstream ${cluster.name} has no endpoints`);
    ctx.endpoint = endpoint;
    ctx.attempts++;
    if (ctx.sampled)
      ctx.decide('endpoint', `${endpoint.id} by ${cluster.balancer.kind}, attempt ${ctx.attempts}`);

    const { req } = ctx;
    const peer = ctx.clientAddress;
    const headers = buildUpstreamHeaders(req.rawHeaders, {
      trusted: this.listener.trust(peer),
      peerAddress: peer,
      proto: this.listener.proto,
      upstreamHost: route.hostRewrite ?? (route.preserveHost ? undefined : endpoint.host),
      requestId: ctx.requestId,
      underscores: this.listener.underscores,
    });

    const method = req.method ?? 'GET';
    const span = this.telemetry.tracing.startClientSpan(ctx.span!, `${method} ${cluster.name}`, {
      'http.request.method': method,
      'server.address': endpoint.url.hostname,
      'server.port': Number(endpoint.url.port) || (endpoint.url.protocol === 'https:' ? 443 : 80),
      'peregrine.upstream': cluster.name,
      'peregrine.endpoint': endpoint.id,
      'peregrine.attempt': ctx.attempts,
    });
    const trace: Record<string, string | string[]> = {};
    this.telemetry.tracing.inject(span, trace);
    for (const name in trace) {
      const v = trace[name]!;
      headers.push(name, Array.isArray(v) ? v.join(',') : v);
    }

    const forwarder = new ResponseForwarder(ctx, endpoint, this, span, this.host);
    ctx.forwarder = forwarder;
    endpoint.inFlight++;
    cluster.inFlight++;
    this.telemetry.metrics.upstreamStarted(cluster.name);
    ctx.upstreamStartedAt = performance.now();
    let body: IncomingMessage | BodyLimit | null = hasBody(req) ? req : null;
    const maxBody = route.config.limits?.maxBodySize ?? 0;
    if (body !== null && maxBody > 0 && req.headers['content-length'] === undefined) {
      // A chunked body has no declared size: count it on the way and cut it at the limit.
      body = limitBody(req, maxBody);
    }
    const path = route.rewritePath(ctx.path);
    const opts: Dispatcher.DispatchOptions = {
      method: method as Dispatcher.HttpMethod,
      path: ctx.query ? path + ctx.query : path,
      headers,
      body,
    };
    forwarder.startResponseTimer(cluster.config.timeouts.response);
    endpoint.pool.dispatch(opts, forwarder);
  }

  attemptFinished(
    ctx: RequestContext,
    endpoint: Endpoint,
    outcome: AttemptOutcome,
    status: number,
    span: Span | undefined,
  ): void {
    endpoint.inFlight--;
    ctx.cluster!.inFlight--;
    this.telemetry.metrics.upstreamFinished(ctx.cluster!.name);
    const ms = performance.now() - ctx.upstreamStartedAt;
    ctx.upstreamDurationMs = (ctx.upstreamDurationMs ?? 0) + ms;
    this.telemetry.metrics.recordAttempt(
      ctx.cluster!.name,
      endpoint.id,
      outcome,
      status,
      ms / 1000,
      ctx.sampled ? ctx.traceId : undefined,
    );
    if (span) {
      if (status) span.setAttribute('http.response.status_code', status);
      if (outcome !== 'success') span.setAttribute('error.type', outcome);
      span.end();
    }
  }

  upstreamCompleted(ctx: RequestContext): void {
    ctx.forwarder = undefined;
    if (ctx.totalTimer) clearTimeout(ctx.totalTimer);
    ctx.totalTimer = undefined;
    if (!ctx.res.destroyed) ctx.res.end();
  }

  upstreamFailed(ctx: RequestContext, error: GatewayError): void {
    ctx.forwarder = undefined;
    if (ctx.totalTimer) clearTimeout(ctx.totalTimer);
    ctx.totalTimer = undefined;
    if (error.code === 'CLIENT_CLOSED') {
      ctx.code ??= 'CLIENT_CLOSED';
      return;
    }
    this.respondWithError(ctx, error);
  }

  /**
   * Answer with problem+json when the response head is still ours to write; otherwise abort the
   * client connection so a cut response never looks complete.
   */
  respondWithError(ctx: RequestContext, error: GatewayError): void {
    ctx.code = error.code;
    const { res } = ctx;
    if (ctx.span && error.status >= 500)
      ctx.span.setStatus({ code: SpanStatusCode.ERROR, message: error.code });
    if (res.headersSent) {
      res.destroy(error);
      return;
    }
    if (res.destroyed) return;
    res.setHeader('x-request-id', ctx.requestId);
    // After a framing error the request body may still be unread: close rather than reuse.
    const close = this.host.draining || error.code === 'BAD_REQUEST' || error.code === 'PAYLOAD_TOO_LARGE';
    sendProblem(res, error, { traceId: ctx.traceId, requestId: ctx.requestId }, close);
  }

  /** Once per request: metrics, access log, span end. */
  finish(ctx: RequestContext): void {
    if (ctx.finished) return;
    ctx.finished = true;
    const { res, req } = ctx;
    if (!res.writableFinished) {
      // The connection closed before the response completed: the client went away, or we cut it.
      ctx.code ??= 'CLIENT_CLOSED';
      if (!ctx.upstreamDone) ctx.forwarder?.abort(new GatewayError('CLIENT_CLOSED'));
      if (ctx.totalTimer) clearTimeout(ctx.totalTimer);
    }
    const status = res.writableFinished || res.headersSent ? res.statusCode : 499;
    const durationMs = performance.now() - ctx.startedAt;
    const routeName = ctx.route?.name ?? NO_ROUTE;
    const method = req.method ?? 'GET';
    const metrics = this.telemetry.metrics;
    metrics.requestFinished(this.listener.name);
    metrics.recordRequest(
      this.listener.name,
      routeName,
      method,
      status,
      durationMs / 1000,
      ctx.sampled ? ctx.traceId : undefined,
    );
    metrics.recordBytes(routeName, ctx.requestBytes, ctx.responseBytes);
    if (ctx.code && ctx.code !== 'CLIENT_CLOSED' && !ctx.upstreamStatus)
      metrics.recordLocalResponse(routeName, ctx.code);
    const span = ctx.span;
    if (span) {
      span.setAttribute('http.response.status_code', status);
      span.setAttribute('url.path', ctx.path);
      if (ctx.code) span.setAttribute('error.type', ctx.code);
      if (ctx.decisions) span.setAttribute('peregrine.decisions', ctx.decisions.map(formatDecision));
      if (ctx.sampled) span.setAttribute('peregrine.request_id', ctx.requestId);
      span.end();
    }
    this.telemetry.accessLog.log({
      listener: this.listener.name,
      route: ctx.route?.name,
      upstream: ctx.cluster?.name,
      endpoint: ctx.endpoint?.id,
      method,
      path: ctx.path || '-',
      status,
      durationMs: round(durationMs),
      upstreamDurationMs: ctx.upstreamDurationMs === undefined ? undefined : round(ctx.upstreamDurationMs),
      requestBytes: ctx.requestBytes,
      responseBytes: ctx.responseBytes,
      traceId: ctx.traceId,
      spanId: ctx.spanId,
      requestId: ctx.requestId,
      clientAddress: ctx.clientAddress,
      code: ctx.code,
      userAgent: req.headers['user-agent'],
      attempts: ctx.attempts,
    });
    this.host.requestFinished();
    const socket = ctx.socket as TrackedSocket | undefined;
    if (socket && --socket[kPending]! === 0 && socket[kDeferredError]) {
      writeRawProblem(socket, socket[kDeferredError]);
    }
  }
}

/**
 * The path-and-query of a request target. An absolute-form target (`http://host/path`) keeps only
 * its path: its authority never chooses the route or the upstream; the Host header does.
 */
export function originForm(target: string): string {
  if (target.charCodeAt(0) === 47 /* / */) return target;
  const scheme = target.startsWith('http://') ? 7 : target.startsWith('https://') ? 8 : -1;
  if (scheme < 0) return target;
  const slash = target.indexOf('/', scheme);
  if (slash >= 0) return target.slice(slash);
  const q = target.indexOf('?', scheme);
  return q >= 0 ? `/${target.slice(q)}` : '/';
}

/** Counts a streamed body and fails it with PAYLOAD_TOO_LARGE past `max` bytes. */
class BodyLimit extends Transform {
  readonly max: number;
  seen = 0;
  constructor(max: number) {
    super();
    this.max = max;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.max) cb(new GatewayError('PAYLOAD_TOO_LARGE', `request body exceeds ${this.max} bytes`));
    else cb(null, chunk);
  }
}

function limitBody(req: IncomingMessage, max: number): BodyLimit {
  const limiter = new BodyLimit(max);
  req.on('error', (err) => limiter.destroy(err));
  req.pipe(limiter);
  return limiter;
}

function formatDecision(d: { stage: string; detail: string }): string {
  return `${d.stage}: ${d.detail}`;
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
