/**
 * The request path, top to bottom:
 *
 *   accept → context (ids, server span) → normalise path → match route → route policies
 *     → admit (upstream gate, breaker, bulkhead) → pick endpoint → build upstream headers
 *     → attempt (client span, undici dispatch, streaming both ways)
 *     → finish (metrics, access log, span end)
 *
 * A WebSocket handshake takes the same stages in the same order (`upgrade`); only the attempt's
 * forwarding differs: a 101 joins the two sockets (forward/websocket.ts).
 *
 * Everything here reads the immutable Snapshot captured when the request arrived.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import { performance } from 'node:perf_hooks';
import { type Duplex, Transform, type TransformCallback } from 'node:stream';
import { TraceFlags } from '@opentelemetry/api';
import type { Dispatcher } from 'undici';
import { routeTableFor, type Snapshot } from '../control/snapshot.ts';
import { asGatewayError, type ErrorCode, GatewayError } from '../errors.ts';
import { requestIdOf } from '../request-id.ts';
import type { MeshSide } from '../sidecar/mesh-telemetry.ts';
import { accessRecord } from '../telemetry/access-log.ts';
import { protocolVersionOf } from '../telemetry/http-attributes.ts';
import type { Telemetry } from '../telemetry/telemetry.ts';
import {
  attemptSpanAttributes,
  endServerSpan,
  routeServerSpan,
  setServerQuery,
} from '../telemetry/tracing.ts';
import { peerIdentityOf } from '../tls/peer-identity.ts';
import {
  type ConnectionSocket,
  isConnectionClosing,
  isLastPending,
  kPending,
  markConnectionClosing,
  RequestContext,
} from './context.ts';
import type { RequestFilter } from './filters/filter.ts';
import { ResponseForwarder } from './forward/forwarder.ts';
import { buildUpstreamHeaders } from './forward/headers.ts';
import { plainAddress, type TrustCheck } from './forward/trusted-proxies.ts';
import type { AttemptOutcome } from './forward/upstream-errors.ts';
import {
  acceptUpgrade,
  holdAdmission,
  TunnelForwarder,
  type TunnelObserver,
  upgradeOutcome,
} from './forward/websocket.ts';
import { type RawProblem, sendProblem, writeRawProblem } from './respond.ts';
import { normalizePath } from './routing/path-normalize.ts';
import type { Endpoint, EndpointDispatchOptions } from './upstream/endpoint.ts';
import { parseRetryAfter } from './upstream/retry-policy.ts';

/** What the data plane needs from the running gateway. */
export interface DataplaneHost {
  readonly telemetry: Telemetry;
  currentSnapshot(): Snapshot;
  readonly draining: boolean;
  requestStarted(): void;
  requestFinished(): void;
  /** Sidecar mode: the mesh side a listener is (inbound or outbound), which adds to its telemetry. */
  meshSide?(listener: string): MeshSide | undefined;
}

export interface ListenerInfo {
  readonly name: string;
  readonly underscores: 'drop' | 'reject' | 'allow';
  /** Header naming the error code on gateway-made responses, or false. */
  readonly reasonHeader: string | false;
  readonly proto: 'http' | 'https';
  readonly trust: TrustCheck;
}

const kContext = Symbol('peregrine.context');
/** A parser error waiting for the requests of its connection still being answered (kPending). */
const kDeferredError = Symbol('peregrine.deferredError');
/** The latest request of an HTTP/1.x connection: the one whose body Node's parser is reading. */
const kLatest = Symbol('peregrine.latest');
type TrackedSocket = ConnectionSocket & { [kDeferredError]?: RawProblem; [kLatest]?: RequestContext };

/**
 * Called on a parser error (`clientError`). When it is about the body of a request already handed
 * to the pipeline (bad chunk framing, a request timeout mid-body), that request ends here: its
 * upstream attempt is aborted and the client answered (or cut). Node tells only the server: the
 * request itself sees nothing until the socket is destroyed, so without this the attempt would
 * wait for a body that never comes, holding an upstream connection until a timeout. Returns true
 * when the error was this request's (also when it already was, as Node reports it again for each
 * chunk that arrives after it).
 */
export function requestBodyFailed(socket: Duplex, code: ErrorCode, cause: NodeJS.ErrnoException): boolean {
  const ctx = (socket as TrackedSocket)[kLatest];
  if (ctx === undefined || ctx.req.complete) return false;
  if (ctx.code !== undefined) {
    // Already being answered with an error (or abandoned): that answer closes the connection.
    markConnectionClosing(socket);
    return true;
  }
  // The upstream's response went out whole: answered after it, like any later parser error.
  if (ctx.res.writableEnded) return false;
  ctx.pipeline!.bodyFailed(ctx, code, cause);
  return true;
}

/**
 * Called on a parser error. When earlier pipelined requests on this connection are still being
 * answered, the error response waits for them (good, good, bad → 200, 200, 400 + close);
 * otherwise it is written at once. Returns true when deferred.
 */
export function deferClientError(socket: Duplex, problem: RawProblem): boolean {
  const s = socket as TrackedSocket;
  if (!s[kPending]) return false;
  s[kDeferredError] = problem;
  return true;
}
type ResponseWithContext = ServerResponse & { [kContext]?: RequestContext };

const NO_ROUTE = '_none';
const NO_ATTRIBUTES: Readonly<Record<string, never>> = Object.freeze({});

function hasBody(req: IncomingMessage): boolean {
  const cl = req.headers['content-length'];
  if (cl !== undefined) return cl !== '0';
  // HTTP/2 has no Transfer-Encoding: a body follows unless HEADERS ended the stream.
  if (req.httpVersionMajor === 2) return !(req as unknown as Http2ServerRequest).stream.endAfterHeaders;
  return req.headers['transfer-encoding'] !== undefined;
}

/**
 * The response went out whole. Node reports the writable side of a torn-down HTTP/2 stream as
 * finished, so there the gateway must also have ended the response and the stream closed without
 * an error code (a session torn down under it closes its streams with code 0).
 */
function responseCompleted(res: ServerResponse): boolean {
  if (!res.writableFinished) return false;
  const stream = (res as unknown as { stream?: { rstCode?: number } }).stream;
  return stream === undefined || (res.writableEnded && !stream.rstCode);
}

/**
 * Node's own check (`requireHostHeader`) is off: it answered with a bare 400 that no metric or log
 * saw, and it let requests pipelined after that answer through to upstreams (RFC 9112 §9.6).
 */
export function assertHostPresent(req: IncomingMessage): void {
  if (req.httpVersionMajor === 1 && req.httpVersionMinor === 1 && req.headers.host === undefined)
    throw new GatewayError('BAD_REQUEST', 'an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)');
}

/**
 * RFC 9112 §6.3: a request whose Transfer-Encoding is anything but one final `chunked` has no
 * reliable length, so it gets 400 and the connection is closed before any upstream is contacted.
 * Node's parser refuses most such heads only after handing the request over (`xchunked` without
 * Content-Length), and accepts codings the gateway cannot undo (`gzip, chunked`), which would
 * reach the upstream decoded of the chunking only, without their Transfer-Encoding.
 */
export function assertTransferEncoding(req: IncomingMessage): void {
  const te = req.headers['transfer-encoding'];
  if (te !== undefined && te !== 'chunked' && te.trim().toLowerCase() !== 'chunked')
    throw new GatewayError('BAD_REQUEST', 'Transfer-Encoding other than chunked (RFC 9112 §6.3)');
}

/**
 * The request's Host; for HTTP/2 `:authority` when there is no Host (both and different → 400).
 * HTTP/1.1 without Host → 400; HTTP/1.0 may omit it.
 */
function requestHost(req: IncomingMessage): string | undefined {
  const host = req.headers.host;
  if (req.httpVersionMajor !== 2) {
    assertHostPresent(req);
    return host;
  }
  const authority = req.headers[':authority'] as string | undefined;
  if (host !== undefined && authority !== undefined && host !== authority)
    throw new GatewayError('BAD_REQUEST', 'Host and :authority differ');
  return host ?? authority;
}

/** Fires once per request when the response is finished or the connection went away. */
function onResponseClose(this: ResponseWithContext): void {
  const ctx = this[kContext];
  if (ctx) ctx.pipeline!.finish(ctx);
}

function onTotalTimeout(ctx: RequestContext): void {
  ctx.totalTimer = undefined;
  ctx.totalExpired = true;
  const error = new GatewayError('UPSTREAM_TIMEOUT', 'total request timeout exceeded');
  if (ctx.forwarder) {
    ctx.forwarder.abort(error);
    return;
  }
  // Between attempts (backoff): nothing to abort, answer now.
  if (ctx.retryTimer) {
    clearTimeout(ctx.retryTimer);
    ctx.retryTimer = undefined;
    ctx.pipeline!.respondWithError(ctx, error);
  }
}

/** Attempts the retry policy counts: a stale connection's replay is not one of them. */
function policyAttempts(ctx: RequestContext): number {
  return ctx.staleRetried ? ctx.attempts - 1 : ctx.attempts;
}

function runRetry(ctx: RequestContext): void {
  ctx.retryTimer = undefined;
  if (!ctx.finished) ctx.pipeline!.guard(ctx, () => ctx.pipeline!.attempt(ctx));
}

/** Read a body of known, small size into one buffer (for replay on retry). */
function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    req.on('data', (c: Buffer) => {
      chunks.push(c);
      got += c.length;
    });
    req.once('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, got)));
    req.once('error', reject);
    req.once('aborted', () => reject(new GatewayError('CLIENT_CLOSED')));
  });
}

export class Pipeline implements TunnelObserver {
  readonly listener: ListenerInfo;
  readonly host: DataplaneHost;
  readonly telemetry: Telemetry;
  readonly mesh: MeshSide | undefined;
  /** X-Forwarded-* sent upstream: not by an outbound sidecar to its mesh peers (headers.ts). */
  readonly #forwarding: boolean;

  constructor(listener: ListenerInfo, host: DataplaneHost) {
    this.listener = listener;
    this.host = host;
    this.telemetry = host.telemetry;
    this.mesh = host.meshSide?.(listener.name);
    this.#forwarding = this.mesh?.direction !== 'outbound';
    this.handle = this.handle.bind(this);
  }

  /**
   * The `request` listener of the HTTP server. `refusal`: the listener refuses this request before
   * it is routed (a malformed HTTP/2 header block); it is answered and counted like any other.
   */
  handle(req: IncomingMessage, res: ServerResponse, refusal?: GatewayError): void {
    const socket = req.socket as TrackedSocket;
    if (req.httpVersionMajor === 1) {
      // Pipelined after a response that closes the connection: not processed (RFC 9112 §9.6).
      // Node answers nothing more on this connection and closes it after that response.
      if (isConnectionClosing(socket)) {
        req.resume();
        this.telemetry.metrics.pipelinedRequestDropped(this.listener.name);
        return;
      }
      if (!res.shouldKeepAlive) markConnectionClosing(socket);
    }
    const ctx = this.begin(req, res);
    ctx.socket = socket;
    socket[kPending] = (socket[kPending] ?? 0) + 1;
    if (req.httpVersionMajor === 1) socket[kLatest] = ctx;
    if (refusal !== undefined) {
      this.respondWithError(ctx, refusal);
      return;
    }
    try {
      this.route(ctx);
    } catch (err) {
      this.respondWithError(ctx, asGatewayError(err));
    }
  }

  /**
   * The `upgrade` listener: a WebSocket handshake, through the same stages as any request. Its
   * socket gets a response object of its own, so a refusal, or an upstream's answer other than
   * 101, is written like any response (and closes the connection).
   */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const tunnel = acceptUpgrade(req, socket, head);
    if (tunnel === undefined) return;
    const ctx = this.begin(req, tunnel.res);
    ctx.tunnel = tunnel;
    try {
      // A tunnel would outlive the drain.
      if (this.host.draining) throw new GatewayError('SHUTTING_DOWN');
      // The bytes after the head belong to the upgraded protocol; a handshake has no body.
      if (hasBody(req)) throw new GatewayError('BAD_REQUEST', 'a WebSocket handshake has no body');
      this.route(ctx);
    } catch (err) {
      this.respondWithError(ctx, asGatewayError(err));
    }
  }

  /** Context, ids and the SERVER span: the first stage of every exchange. */
  begin(req: IncomingMessage, res: ServerResponse): RequestContext {
    const ctx = new RequestContext(req, res, this.host.currentSnapshot(), performance.now());
    ctx.pipeline = this;
    (res as ResponseWithContext)[kContext] = ctx;
    // `on`, not `once`: 'close' comes once, finish() is idempotent, and `once` wraps the listener in
    // a bound function and a state object per request.
    res.on('close', onResponseClose);
    this.host.requestStarted();
    this.telemetry.metrics.requestStarted(this.listener.name);

    ctx.requestId = requestIdOf(req);
    ctx.clientAddress = plainAddress(req.socket.remoteAddress);
    // TLS listeners: the verified mTLS identity, computed once per connection by the listener.
    if (this.listener.proto === 'https') ctx.identity = peerIdentityOf(req.socket)?.id;
    const span = this.telemetry.tracing.startServerSpan(req.method ?? 'GET', req.headers, {
      'url.scheme': this.listener.proto,
      'client.address': ctx.clientAddress,
      'network.protocol.version': protocolVersionOf(req),
    });
    ctx.span = span;
    if (ctx.identity !== undefined) span.setAttribute('peregrine.client.identity', ctx.identity);
    const sc = span.spanContext();
    ctx.traceId = sc.traceId;
    ctx.spanId = sc.spanId;
    ctx.sampled = (sc.traceFlags & TraceFlags.SAMPLED) !== 0;
    return ctx;
  }

  route(ctx: RequestContext): void {
    const { req } = ctx;
    assertTransferEncoding(req);
    const target = normalizePath(originForm(req.url ?? '/'));
    if ('error' in target) throw new GatewayError('BAD_REQUEST', `invalid request target (${target.error})`);
    ctx.path = target.path;
    ctx.query = target.query;

    const method = req.method ?? 'GET';
    const match = routeTableFor(ctx.snapshot, this.listener.name).match(
      requestHost(req),
      ctx.path,
      method,
      req.headers,
    );
    if (!match) throw new GatewayError('ROUTE_NOT_FOUND');
    const route = match.route;
    ctx.route = route;
    // The decision log is built for sampled requests only: it is read from their spans.
    if (ctx.sampled) ctx.decide('route', `${route.name} (priority ${route.priority})`);
    if (ctx.span !== undefined) routeServerSpan(ctx.span, method, route.httpRoute, route.name);
    const maxBody = route.config.limits?.maxBodySize ?? 0;
    if (maxBody > 0) {
      const declared = req.headers['content-length'];
      if (declared !== undefined && Number(declared) > maxBody)
        throw new GatewayError('PAYLOAD_TOO_LARGE', `request body exceeds ${maxBody} bytes`);
    }

    const cluster = ctx.snapshot.clusters.get(route.upstream);
    if (!cluster) throw new GatewayError('UPSTREAM_UNAVAILABLE', `upstream ${route.upstream} is not defined`);
    ctx.cluster = cluster;
    const plan = ctx.snapshot.plans.get(route.name)!;
    ctx.plan = plan;
    const filters = plan.filters;
    if (filters) this.runFilters(ctx, filters, 0);
    else this.admit(ctx);
  }

  /** Run the route's filters in order; an asynchronous one suspends the loop until it settles. */
  runFilters(ctx: RequestContext, filters: readonly RequestFilter[], from: number): void {
    for (let i = from; i < filters.length; i++) {
      const pending = filters[i]!.onRequest(ctx);
      if (pending !== undefined) {
        pending.then(
          () => {
            if (!ctx.finished) this.guard(ctx, () => this.runFilters(ctx, filters, i + 1));
          },
          (err: unknown) => {
            if (!ctx.finished) this.respondWithError(ctx, asGatewayError(err));
          },
        );
        return;
      }
    }
    this.admit(ctx);
  }

  /** Run a stage from a callback: a throw becomes the request's error response. */
  guard(ctx: RequestContext, stage: () => void): void {
    try {
      stage();
    } catch (err) {
      this.respondWithError(ctx, asGatewayError(err));
    }
  }

  /**
   * The upstream's admission: its upstream-side policies, circuit breaker and bulkhead; may answer
   * at once (503, or the policy's refusal), or queue the request.
   */
  admit(ctx: RequestContext): void {
    const cluster = ctx.cluster!;
    const verdict = cluster.admit(ctx, ctx.plan!.admission);
    if (verdict === undefined) {
      ctx.admitted = true;
      this.start(ctx);
      return;
    }
    if (verdict instanceof GatewayError) {
      if (ctx.sampled) ctx.decide('admission', verdict.code);
      throw verdict;
    }
    verdict.then(
      (refused) => {
        if (refused) {
          if (!ctx.finished) this.respondWithError(ctx, refused);
          return;
        }
        if (ctx.finished) {
          cluster.release(ctx);
          return;
        }
        ctx.admitted = true;
        this.guard(ctx, () => this.start(ctx));
      },
      (err: unknown) => {
        if (!ctx.finished) this.respondWithError(ctx, asGatewayError(err));
      },
    );
  }

  /** The upstream exchange begins: total timeout armed, body made replayable when it is small. */
  start(ctx: RequestContext): void {
    const cluster = ctx.cluster!;
    cluster.requestStarted();
    ctx.firstAttemptAt = performance.now();
    const total = cluster.config.timeouts.request;
    if (total > 0) ctx.totalTimer = setTimeout(onTotalTimeout, total, ctx);
    const { req } = ctx;
    if (!hasBody(req)) {
      ctx.bodyReplayable = true;
      this.attempt(ctx);
      return;
    }
    const declared = req.headers['content-length'];
    const policy = cluster.retryPolicy;
    if (policy.maxAttempts > 1 && declared !== undefined && Number(declared) <= policy.bufferBody) {
      // Small enough to keep: read it once so a retry can send it again.
      readBody(req).then(
        (buf) => {
          if (ctx.finished) return;
          ctx.body = buf;
          ctx.bodyReplayable = true;
          this.guard(ctx, () => this.attempt(ctx));
        },
        (err: unknown) => {
          if (!ctx.finished)
            this.respondWithError(
              ctx,
              new GatewayError('BAD_REQUEST', 'request body could not be read', { cause: err }),
            );
        },
      );
      return;
    }
    this.attempt(ctx);
  }

  attempt(ctx: RequestContext): void {
    // Already answered while an earlier stage was waiting (its body failed): never dispatched.
    if (ctx.code !== undefined) {
      this.clearTotalTimer(ctx);
      return;
    }
    const route = ctx.route!;
    const cluster = ctx.cluster!;
    if (ctx.attempts > 0) {
      // A retry: the breaker may have tripped during its backoff (or be probing, half-open).
      const refusal = cluster.retryBlockedByBreaker();
      if (refusal !== undefined) {
        if (ctx.sampled) ctx.decide('retry', `${refusal.code}: retry not sent`);
        this.clearTotalTimer(ctx);
        throw refusal;
      }
    }
    const last = ctx.endpoint;
    // A stale connection's replay goes to the same endpoint (it did nothing wrong), while it stays.
    const endpoint =
      ctx.retryReason === 'stale_connection' && last !== undefined && !last.removed && !last.draining
        ? last
        : cluster.pick(ctx);
    if (!endpoint) throw new GatewayError('NO_HEALTHY_ENDPOINT', cluster.noEndpointReason());
    ctx.endpoint = endpoint;
    ctx.attempts++;
    if (ctx.tried === undefined) ctx.tried = [endpoint];
    else ctx.tried.push(endpoint);
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
      clientCert: ctx.identity === undefined ? undefined : peerIdentityOf(req.socket)?.xfcc,
      strip: ctx.plan?.stripHeaders ?? undefined,
      forwarding: this.#forwarding,
    });
    if (ctx.upstreamHeaders) for (const h of ctx.upstreamHeaders) headers.push(h);

    const method = req.method ?? 'GET';
    const path = route.rewritePath(ctx.path);
    const parent = ctx.span!;
    // Named and described only when it can be recorded: most requests are not sampled.
    const span = parent.isRecording()
      ? this.telemetry.tracing.startClientSpan(
          parent,
          `${method} ${cluster.name}`,
          attemptSpanAttributes(
            method,
            endpoint.id,
            endpoint.serverAddress,
            endpoint.serverPort,
            path,
            ctx.query,
            cluster.name,
            ctx.attempts - 1,
          ),
        )
      : this.telemetry.tracing.startClientSpan(parent, method, NO_ATTRIBUTES);
    if (ctx.retryReason !== undefined && span.isRecording()) {
      span.setAttribute('peregrine.retry.reason', ctx.retryReason);
      span.setAttribute('peregrine.retry.backoff_ms', ctx.backoffMs);
    }
    this.telemetry.tracing.injectInto(span, headers);

    // The one place requests and WebSocket handshakes part: how the upstream's answer is forwarded.
    const tunnel = ctx.tunnel;
    const forwarder =
      tunnel === undefined
        ? new ResponseForwarder(ctx, endpoint, this, span, this.host)
        : new TunnelForwarder(ctx, endpoint, this, span, this.host);
    ctx.forwarder = forwarder;
    cluster.attemptStarted(endpoint);
    this.telemetry.metrics.upstreamStarted(cluster.name);
    ctx.upstreamStartedAt = performance.now();
    let body: IncomingMessage | BodyLimit | Buffer | null = ctx.body ?? (hasBody(req) ? req : null);
    const maxBody = route.config.limits?.maxBodySize ?? 0;
    if (body === req && maxBody > 0 && req.headers['content-length'] === undefined) {
      // A chunked body has no declared size: count it on the way and cut it at the limit.
      body = limitBody(req, maxBody);
    }
    const opts: EndpointDispatchOptions = {
      method: method as Dispatcher.HttpMethod,
      path: ctx.query ? path + ctx.query : path,
      headers,
      body,
      servername: endpoint.servername,
    };
    // undici writes `Connection: upgrade` and `Upgrade` itself, and hands over the socket on 101.
    if (tunnel !== undefined) opts.upgrade = 'websocket';
    const timeouts = cluster.config.timeouts;
    forwarder.startTimers(
      timeouts.response,
      timeouts.idle,
      ctx.totalTimer === undefined ? 0 : timeouts.request,
    );
    if (ctx.retryReason === 'stale_connection' && endpoint === last) endpoint.dispatchFresh(opts, forwarder);
    else endpoint.pool.dispatch(opts, forwarder);
  }

  attemptFinished(ctx: RequestContext, endpoint: Endpoint, outcome: AttemptOutcome, status: number): void {
    const cluster = ctx.cluster!;
    this.telemetry.metrics.upstreamFinished(cluster.name);
    const now = performance.now();
    const ms = now - ctx.upstreamStartedAt;
    // Latency for the balancer and outlier detection: to the response head (or the failure).
    const events = cluster.attemptFinished(
      endpoint,
      outcome,
      status,
      ctx.headAt > 0 ? ctx.headAt - ctx.upstreamStartedAt : ms,
      ctx,
    );
    // A breaker transition or an ejection this attempt caused is recorded on its request's span.
    if (events !== undefined && ctx.span !== undefined) {
      for (const e of events) ctx.span.addEvent(e.name, e.attributes);
    }
    ctx.headAt = 0;
    ctx.upstreamDurationMs = (ctx.upstreamDurationMs ?? 0) + ms;
    this.telemetry.metrics.recordAttempt(
      cluster.name,
      endpoint.id,
      outcome,
      status,
      ms / 1000,
      ctx.sampled ? ctx.traceId : undefined,
    );
  }

  /**
   * The upstream answered with a status the retry policy lists: retry (the forwarder then drops
   * this response) or relay it. Only called before anything reached the client.
   */
  retryOnStatus(ctx: RequestContext, status: number, retryAfter: string | undefined): boolean {
    const decision = ctx.cluster!.retryDecision({
      attempt: policyAttempts(ctx),
      method: ctx.req.method ?? 'GET',
      outcome: 'success',
      status,
      bytesSent: true,
      bodyReplayable: ctx.bodyReplayable,
      retryAfterMs: retryAfter === undefined ? undefined : parseRetryAfter(retryAfter),
      elapsedMs: performance.now() - ctx.firstAttemptAt,
    });
    if (ctx.sampled)
      ctx.decide(
        'retry',
        `status ${status}: ${decision.retry ? `retry in ${decision.delayMs}ms` : decision.reason}`,
      );
    if (!decision.retry) return false;
    ctx.pendingRetry = decision;
    return true;
  }

  upstreamCompleted(ctx: RequestContext): void {
    ctx.forwarder = undefined;
    if (ctx.pendingRetry) {
      this.scheduleRetry(ctx);
      return;
    }
    if (ctx.totalTimer) clearTimeout(ctx.totalTimer);
    ctx.totalTimer = undefined;
    if (!ctx.res.destroyed) ctx.res.end();
  }

  upstreamFailed(
    ctx: RequestContext,
    error: GatewayError,
    forwarder: ResponseForwarder,
    outcome: AttemptOutcome,
  ): void {
    ctx.forwarder = undefined;
    if (error.code === 'CLIENT_CLOSED') {
      this.clearTotalTimer(ctx);
      ctx.code ??= 'CLIENT_CLOSED';
      if (ctx.tunnel !== undefined) ctx.tunnel.failure = outcome;
      return;
    }
    if (ctx.pendingRetry) {
      // The attempt was dropped on purpose after a retryable status.
      this.scheduleRetry(ctx);
      return;
    }
    if (outcome === 'stale_connection') ctx.staleRetried = true;
    if (!ctx.res.headersSent && !ctx.finished && outcome !== 'client_abort' && !ctx.totalExpired) {
      const decision = ctx.cluster!.retryDecision({
        attempt: policyAttempts(ctx),
        method: ctx.req.method ?? 'GET',
        outcome,
        status: ctx.upstreamStatus,
        bytesSent: forwarder.controller !== undefined,
        bodySent: forwarder.bodySent,
        bodyReplayable: ctx.bodyReplayable,
        elapsedMs: performance.now() - ctx.firstAttemptAt,
        tried: ctx.tried,
      });

      if (ctx.sampled)
        ctx.decide(
          'retry',
          `${error.code}: ${decision.retry ? `retry in ${decision.delayMs}ms` : decision.reason}`,
        );
      if (decision.retry) {
        ctx.pendingRetry = decision;
        this.scheduleRetry(ctx);
        return;
      }
    }
    this.clearTotalTimer(ctx);
    if (ctx.tunnel !== undefined) ctx.tunnel.failure = outcome;
    this.respondWithError(ctx, error);
  }

  /**
   * A WebSocket handshake got its 101 and the sockets are joined: the exchange is finished for
   * the telemetry (the handshake's status and duration), but an admitted tunnel keeps its bulkhead
   * slot until it closes (docs/decisions.md, "WebSocket upgrades").
   */
  tunnelOpened(ctx: RequestContext): void {
    ctx.forwarder = undefined;
    this.clearTotalTimer(ctx);
    if (ctx.admitted) {
      ctx.admitted = false;
      holdAdmission(ctx.tunnel!, ctx.cluster!, ctx.breakerTicket);
    }
    this.finish(ctx);
  }

  scheduleRetry(ctx: RequestContext): void {
    const decision = ctx.pendingRetry!;
    ctx.pendingRetry = undefined;
    ctx.upstreamStatus = 0;
    ctx.retryReason = decision.reason;
    ctx.backoffMs = decision.delayMs;
    if (ctx.finished) return;
    if (decision.delayMs <= 0) {
      this.guard(ctx, () => this.attempt(ctx));
      return;
    }
    ctx.retryTimer = setTimeout(runRetry, decision.delayMs, ctx);
  }

  clearTotalTimer(ctx: RequestContext): void {
    if (ctx.totalTimer) clearTimeout(ctx.totalTimer);
    ctx.totalTimer = undefined;
  }

  /**
   * The request's body broke after its head was handed over (requestBodyFailed). The connection
   * is done: nothing after this request is processed. A running attempt is aborted (undici
   * destroys its upstream connection, which is never reused) and ends as `client_abort`, never
   * against the upstream; the client gets the error if no response started, else its connection
   * is cut. Before any attempt (a stage still waiting) it is answered now and never dispatched.
   */
  bodyFailed(ctx: RequestContext, code: ErrorCode, cause: NodeJS.ErrnoException): void {
    markConnectionClosing(ctx.socket);
    const error = new GatewayError(code, `request body rejected (${cause.code ?? 'parse error'})`, { cause });
    if (ctx.sampled) ctx.decide('request body', `${cause.code}: attempt aborted`);
    this.telemetry.logger.debug(
      { listener: this.listener.name, requestId: ctx.requestId, code: cause.code },
      'request body framing error; request ended',
    );
    if (ctx.forwarder) {
      ctx.forwarder.abort(error);
      return;
    }
    if (ctx.retryTimer) clearTimeout(ctx.retryTimer);
    ctx.retryTimer = undefined;
    this.clearTotalTimer(ctx);
    this.respondWithError(ctx, error);
  }

  /**
   * Answer with problem+json when the response head is still ours to write; otherwise abort the
   * client connection so a cut response never looks complete.
   */
  respondWithError(ctx: RequestContext, error: GatewayError): void {
    ctx.code = error.code;
    const { res } = ctx;
    if (res.headersSent) {
      res.destroy(error);
      return;
    }
    if (res.destroyed) return;
    res.setHeader('x-request-id', ctx.requestId);
    const extra = ctx.responseHeaders;
    if (extra !== undefined)
      for (let i = 0; i < extra.length; i += 2) res.setHeader(extra[i]!, extra[i + 1]!);
    // After a framing error or a body timeout the request body may still be unread: close rather
    // than reuse.
    // (HTTP/2 has no Connection header: a stream is independent of the session.)
    const close =
      ctx.req.httpVersionMajor !== 2 &&
      ((this.host.draining && isLastPending(ctx.socket)) ||
        error.code === 'BAD_REQUEST' ||
        error.code === 'PAYLOAD_TOO_LARGE' ||
        error.code === 'REQUEST_TIMEOUT');
    if (close) markConnectionClosing(ctx.socket);
    ctx.responseBytes += sendProblem(
      res,
      error,
      { traceId: ctx.traceId, requestId: ctx.requestId },
      close,
      this.listener.reasonHeader,
    );
  }

  /** Once per request: metrics, access log, span end. */
  finish(ctx: RequestContext): void {
    if (ctx.finished) return;
    ctx.finished = true;
    const { res, req } = ctx;
    const tunnel = ctx.tunnel;
    const completed = tunnel?.open === true || responseCompleted(res);
    if (!completed) {
      // The connection closed before the response completed: the client went away, or we cut it.
      ctx.code ??= 'CLIENT_CLOSED';
      ctx.forwarder?.abort(new GatewayError('CLIENT_CLOSED'));
      if (ctx.totalTimer) clearTimeout(ctx.totalTimer);
    }
    if (ctx.retryTimer) clearTimeout(ctx.retryTimer);
    if (ctx.admitted) ctx.cluster!.release(ctx);
    // 499: the client went away before any response (nothing was sent: no status on the span).
    const sent = completed || res.headersSent;
    const status = sent ? res.statusCode : 499;
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
    if (ctx.code && ctx.code !== 'CLIENT_CLOSED' && !ctx.upstreamStatus) {
      metrics.recordLocalResponse(routeName, ctx.code);
      this.telemetry.decisions.record(
        this.listener.name,
        ctx.route?.name,
        ctx.cluster?.name,
        status,
        ctx.code,
        ctx.traceId,
        ctx.sampled,
        ctx.requestId,
      );
    }
    if (tunnel !== undefined) metrics.recordWebSocketUpgrade(ctx.route?.name, upgradeOutcome(ctx, tunnel));
    if (this.mesh !== undefined) this.mesh.record(ctx, status, durationMs / 1000);
    const span = ctx.span;
    if (span) {
      span.setAttribute('url.path', ctx.path);
      setServerQuery(span, ctx.query);
      if (ctx.decisions) span.setAttribute('peregrine.decisions', ctx.decisions.map(formatDecision));
      if (ctx.sampled) span.setAttribute('peregrine.request_id', ctx.requestId);
      if (ctx.subject !== undefined) span.setAttribute('enduser.id', ctx.subject);
      const denials = ctx.plan?.denials;
      if (denials)
        span.setAttribute(
          'peregrine.policy.result',
          ctx.code === undefined || ctx.upstreamStatus || !denials.has(ctx.code)
            ? 'allow'
            : `deny:${ctx.code}`,
        );
      endServerSpan(span, sent ? status : undefined, ctx.code);
    }
    const accessLog = this.telemetry.accessLog;
    if (accessLog.enabled)
      accessLog.log(
        accessRecord(
          this.listener.name,
          ctx.route?.name,
          ctx.cluster?.name,
          ctx.endpoint?.id,
          method,
          status,
          durationMs,
          req.headers['user-agent'],
          ctx,
        ),
      );
    this.host.requestFinished();
    const socket = ctx.socket as TrackedSocket | undefined;
    if (socket !== undefined && socket[kLatest] === ctx) socket[kLatest] = undefined;
    if (socket && --socket[kPending]! === 0 && socket[kDeferredError]) {
      writeRawProblem(socket, socket[kDeferredError], this.listener.reasonHeader);
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
    if (this.seen > this.max)
      cb(new GatewayError('PAYLOAD_TOO_LARGE', `request body exceeds ${this.max} bytes`));
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
