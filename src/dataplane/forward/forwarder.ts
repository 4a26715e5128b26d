/**
 * One upstream attempt over undici's dispatch API: the request body streams from the client to
 * the upstream and the response streams back, both with backpressure and nothing buffered.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Span } from '@opentelemetry/api';
import type { Dispatcher } from 'undici';
import { GatewayError } from '../../errors.ts';
import { endClientSpan } from '../../telemetry/tracing.ts';
import { isLastPending, markConnectionClosing, type RequestContext } from '../context.ts';
import { onFreshConnection } from '../upstream/connector.ts';
import type { Endpoint } from '../upstream/endpoint.ts';
import { responseHeaderList } from './headers.ts';
import {
  type AttemptOutcome,
  classifyUpstreamError,
  isClientSide,
  isStaleConnectionFailure,
} from './upstream-errors.ts';

/** What the forwarder reports back to the pipeline, which owns metrics and the response. */
export interface AttemptObserver {
  attemptFinished(ctx: RequestContext, endpoint: Endpoint, outcome: AttemptOutcome, status: number): void;
  /**
   * The attempt failed before or after the response head (or was dropped for a retry); the
   * pipeline retries or answers the client.
   */
  upstreamFailed(
    ctx: RequestContext,
    error: GatewayError,
    forwarder: ResponseForwarder,
    outcome: AttemptOutcome,
  ): void;
  upstreamCompleted(ctx: RequestContext): void;
  /** A status the upstream's retry policy lists arrived: true when the pipeline will retry. */
  retryOnStatus(ctx: RequestContext, status: number, retryAfter: string | undefined): boolean;
}

/** Abort reason for a response dropped because the request will be retried. */
const DROPPED_FOR_RETRY = new GatewayError('UPSTREAM_UNAVAILABLE', 'response dropped for a retry');

function resumeController(this: ResponseForwarder): void {
  this.resumeUpstream();
}

function onResponseTimeout(forwarder: ResponseForwarder): void {
  forwarder.responseTimer = undefined;
  forwarder.abort(new GatewayError('UPSTREAM_TIMEOUT', 'no response head within the response timeout'));
}

function onBodyIdle(forwarder: ResponseForwarder): void {
  forwarder.bodyIdleElapsed();
}

/** Dispatch handler for one attempt. Methods, not closures, so profiles read and nothing is allocated per chunk. */
export class ResponseForwarder implements Dispatcher.DispatchHandler {
  readonly ctx: RequestContext;
  readonly endpoint: Endpoint;
  readonly observer: AttemptObserver;
  readonly span: Span | undefined;
  /** Read at response time: a drain that began mid-request still closes the connection. */
  readonly lifecycle: { readonly draining: boolean };
  controller: Dispatcher.DispatchController | undefined = undefined;
  /** The response-head timeout: ours, not undici's (docs/decisions.md, "Forwarding"). */
  responseTimer: NodeJS.Timeout | undefined = undefined;
  /**
   * The body idle timeout (`timeouts.idle`): armed at the response head, pushed back by every
   * chunk, not counted while the client holds the body back. Ours, not undici's `bodyTimeout`
   * (docs/decisions.md, "Forwarding").
   */
  #bodyTimer: NodeJS.Timeout | undefined = undefined;
  #bodyIdleMs = 0;
  /** The client is not taking the body: the upstream's silence is ours, not a timeout. */
  #paused = false;
  /** When the current pause began, and the time spent paused before it (ms). */
  #pausedAt = 0;
  #heldMs = 0;
  #done = false;
  /** Written on a connection that had served a request before (see onFreshConnection). */
  reused = false;
  /** A byte of the request body was written upstream. */
  bodySent = false;
  /** This attempt's response is being dropped: the request goes to another attempt. */
  #dropped = false;
  #onDrain: (() => void) | undefined = undefined;

  constructor(
    ctx: RequestContext,
    endpoint: Endpoint,
    observer: AttemptObserver,
    span: Span | undefined,
    lifecycle: { readonly draining: boolean },
  ) {
    this.ctx = ctx;
    this.endpoint = endpoint;
    this.observer = observer;
    this.span = span;
    this.lifecycle = lifecycle;
  }

  /**
   * Arm the response-head timeout now, and the body idle timeout for when the head arrives (0
   * disables either). `totalMs`: the request's total timeout when its timer runs (else 0). A timer
   * armed after that one for at least as long can only fall due after it, when the total timeout
   * has already ended the exchange (the default idle timeout equals the default total): it is not
   * armed, which saves a Timeout and its list updates per request (and a refresh per chunk).
   */
  startTimers(responseMs: number, bodyIdleMs: number, totalMs: number): void {
    if (responseMs > 0 && !(totalMs > 0 && responseMs >= totalMs))
      this.responseTimer = setTimeout(onResponseTimeout, responseMs, this);
    this.#bodyIdleMs = totalMs > 0 && bodyIdleMs >= totalMs ? 0 : bodyIdleMs;
  }

  #clearTimers(): void {
    if (this.responseTimer !== undefined) {
      clearTimeout(this.responseTimer);
      this.responseTimer = undefined;
    }
    if (this.#bodyTimer !== undefined) {
      clearTimeout(this.#bodyTimer);
      this.#bodyTimer = undefined;
    }
  }

  /** The body idle timer fired: fail the attempt unless the client is the one holding it up. */
  bodyIdleElapsed(): void {
    // Resuming restarts the timer (`refresh` re-arms a timer that has fired).
    if (this.#paused) return;
    this.abort(new GatewayError('UPSTREAM_BODY_TIMEOUT', 'no response body data within the idle timeout'));
  }

  /** The client took what was written: read from the upstream again, and restart the idle clock. */
  resumeUpstream(): void {
    this.#paused = false;
    this.#heldMs += performance.now() - this.#pausedAt;
    this.#bodyTimer?.refresh();
    this.controller?.resume();
  }

  /**
   * End this attempt without a response to relay (a WebSocket tunnel took its connection over):
   * its timers stop and a later abort does nothing. False when it had already ended.
   */
  protected settle(): boolean {
    if (this.#done) return false;
    this.#done = true;
    this.#clearTimers();
    return true;
  }

  /** Abort this attempt (client went away, total timeout). Safe after completion. */
  abort(reason: Error): void {
    if (this.#done) return;
    if (this.controller) this.controller.abort(reason);
    else this.#fail(reason);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    this.reused = !onFreshConnection();
    // Given up while undici still had it queued (e.g. the client left during the connect): undici
    // offers no way to unqueue, so stop it here, before it is written upstream.
    if (this.#done) controller.abort(new GatewayError('CLIENT_CLOSED'));
  }

  onBodySent(chunk: Buffer | string): void {
    this.bodySent = true;
    this.ctx.requestBytes += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
  ): void {
    this.#clearTimers();
    const { ctx } = this;
    ctx.upstreamStatus = statusCode;
    ctx.headAt = performance.now();
    const res = ctx.res;
    if (res.destroyed) return;
    if (ctx.cluster!.isRetryableStatus(statusCode)) {
      const retryAfter = headers['retry-after'];
      if (
        this.observer.retryOnStatus(ctx, statusCode, typeof retryAfter === 'string' ? retryAfter : undefined)
      ) {
        this.#dropped = true;
        controller.abort(DROPPED_FOR_RETRY);
        return;
      }
    }
    // HTTP/2 has no Connection header (Node refuses it); a draining session gets GOAWAY instead.
    // HTTP/1.1: the last response pending on the connection closes it (the ones pipelined after
    // this one are already being answered).
    const close = this.lifecycle.draining && ctx.req.httpVersionMajor !== 2 && isLastPending(ctx.socket);
    if (close) markConnectionClosing(ctx.socket);
    // An upstream's own 429 passes as it is: its Retry-After and limits are the upstream's word.
    const extra = statusCode === 429 ? undefined : ctx.responseHeaders;
    res.writeHead(statusCode, responseHeaderList(headers, ctx.requestId, close, extra));
    if (this.#bodyIdleMs > 0) this.#bodyTimer = setTimeout(onBodyIdle, this.#bodyIdleMs, this);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#dropped) return;
    const res = this.ctx.res;
    this.ctx.responseBytes += chunk.length;
    if (res.destroyed) return;
    this.#bodyTimer?.refresh();
    if (!res.write(chunk)) {
      this.#paused = true;
      this.#pausedAt = performance.now();
      controller.pause();
      this.#onDrain ??= resumeController.bind(this);
      res.once('drain', this.#onDrain);
    }
  }

  onResponseEnd(): void {
    if (this.#done) return;
    this.#done = true;
    this.#clearTimers();
    const { ctx } = this;
    if (this.span) endClientSpan(this.span, ctx.upstreamStatus, undefined);
    this.observer.attemptFinished(ctx, this.endpoint, 'success', ctx.upstreamStatus);
    this.observer.upstreamCompleted(ctx);
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.#fail(error);
  }

  #fail(error: Error): void {
    if (this.#done) return;
    this.#done = true;
    this.#clearTimers();
    const { ctx } = this;
    if (this.#dropped) {
      // The upstream answered (with a retryable status): a complete attempt, not a failure.
      if (this.span) endClientSpan(this.span, ctx.upstreamStatus, undefined);
      this.observer.attemptFinished(ctx, this.endpoint, 'success', ctx.upstreamStatus);
      this.observer.upstreamFailed(ctx, DROPPED_FOR_RETRY, this, 'success');
      return;
    }
    const classified = classifyUpstreamError(error);
    let outcome = classified.outcome;
    // The endpoint closed an idle connection as this request went out on it: its right, not its
    // failure. Once per request; the retry goes out on a fresh connection (docs/resilience.md).
    if (
      outcome === 'reset' &&
      !ctx.staleRetried &&
      !ctx.res.destroyed &&
      isStaleConnectionFailure(error, this.reused, ctx.upstreamStatus)
    )
      outcome = 'stale_connection';
    else if (!isClientSide(outcome)) {
      // A client that is gone, or that held the exchange up until a timeout ran out, says nothing
      // about the upstream: such results must not open its breaker or eject it.
      if (ctx.res.destroyed) outcome = 'client_abort';
      else if (outcome === 'timeout' && this.#clientHeldUp(ctx.totalExpired)) outcome = 'client_timeout';
      else if (classified.tls !== undefined) ctx.cluster!.tlsFailed(this.endpoint, classified.tls);
    }
    // Failed all the same (the upstream exchange did not complete), whoever's doing it was:
    // `peregrine.outcome` says whose.
    if (this.span)
      endClientSpan(
        this.span,
        ctx.upstreamStatus,
        outcome === 'client_abort' ? 'CLIENT_CLOSED' : classified.error.code,
        outcome,
      );
    this.observer.attemptFinished(ctx, this.endpoint, outcome, ctx.upstreamStatus);
    this.observer.upstreamFailed(ctx, classified.error, this, outcome);
  }

  /**
   * Whether a timeout that just ran out is the client's doing: it is still sending its request body
   * and the gateway is reading it (not held back by the upstream), or, for the total timeout, it
   * is holding the response body back now or held it back for at least half of this attempt. A
   * connect timeout never is (no request was written), nor a body idle timeout while the client
   * takes the body (the idle timer does not run while it does not).
   */
  #clientHeldUp(total: boolean): boolean {
    const req = this.ctx.req;
    if (this.controller !== undefined && !req.complete && req.readableFlowing === true) return true;
    if (!total) return false;
    if (this.#paused) return true;
    const elapsed = performance.now() - this.ctx.upstreamStartedAt;
    return this.#heldMs > 0 && this.#heldMs * 2 >= elapsed;
  }
}
