/**
 * One upstream attempt over undici's dispatch API: the request body streams from the client to
 * the upstream and the response streams back, both with backpressure and nothing buffered.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Span } from '@opentelemetry/api';
import { SpanStatusCode } from '@opentelemetry/api';
import type { Dispatcher } from 'undici';
import { GatewayError } from '../../errors.ts';
import type { RequestContext } from '../context.ts';
import type { Endpoint } from '../upstream/endpoint.ts';
import { cleanResponseHeaders } from './headers.ts';
import type { AttemptOutcome } from './upstream-errors.ts';
import { classifyUpstreamError } from './upstream-errors.ts';

/** What the forwarder reports back to the pipeline, which owns metrics and the response. */
export interface AttemptObserver {
  attemptFinished(
    ctx: RequestContext,
    endpoint: Endpoint,
    outcome: AttemptOutcome,
    status: number,
    span: Span | undefined,
  ): void;
  /** Upstream exchange failed before or after the response head; the pipeline answers the client. */
  upstreamFailed(ctx: RequestContext, error: GatewayError): void;
  upstreamCompleted(ctx: RequestContext): void;
}

function resumeController(this: ResponseForwarder): void {
  this.controller?.resume();
}

function onResponseTimeout(forwarder: ResponseForwarder): void {
  forwarder.responseTimer = undefined;
  forwarder.abort(new GatewayError('UPSTREAM_TIMEOUT', 'no response head within the response timeout'));
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
  /**
   * The response-head timeout is ours, not undici's: undici runs header/body timeouts on a coarse
   * clock (about 1 s resolution), which would let a 200 ms timeout fire a second late.
   */
  responseTimer: NodeJS.Timeout | undefined = undefined;
  #done = false;
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

  /** Arm the response-head timeout (0 disables). */
  startResponseTimer(ms: number): void {
    if (ms > 0) this.responseTimer = setTimeout(onResponseTimeout, ms, this);
  }

  #clearResponseTimer(): void {
    if (this.responseTimer !== undefined) {
      clearTimeout(this.responseTimer);
      this.responseTimer = undefined;
    }
  }

  /** Abort this attempt (client went away, total timeout). Safe after completion. */
  abort(reason: Error): void {
    if (this.#done) return;
    if (this.controller) this.controller.abort(reason);
    else this.#fail(reason);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
  }

  onBodySent(chunk: Buffer | string): void {
    this.ctx.requestBytes += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
  ): void {
    this.#clearResponseTimer();
    const { ctx } = this;
    ctx.upstreamStatus = statusCode;
    const res = ctx.res;
    if (res.destroyed) return;
    cleanResponseHeaders(headers);
    if (this.lifecycle.draining) headers.connection = 'close';
    headers['x-request-id'] = ctx.requestId;
    res.writeHead(statusCode, headers);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    const res = this.ctx.res;
    this.ctx.responseBytes += chunk.length;
    if (res.destroyed) return;
    if (!res.write(chunk)) {
      controller.pause();
      this.#onDrain ??= resumeController.bind(this);
      res.once('drain', this.#onDrain);
    }
  }

  onResponseEnd(): void {
    if (this.#done) return;
    this.#done = true;
    const { ctx } = this;
    ctx.upstreamDone = true;
    this.observer.attemptFinished(ctx, this.endpoint, 'success', ctx.upstreamStatus, this.span);
    this.observer.upstreamCompleted(ctx);
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.#fail(error);
  }

  #fail(error: Error): void {
    if (this.#done) return;
    this.#done = true;
    this.#clearResponseTimer();
    const { ctx } = this;
    ctx.upstreamDone = true;
    const classified = classifyUpstreamError(error);
    if (this.span && classified.outcome !== 'client_abort') {
      this.span.setStatus({ code: SpanStatusCode.ERROR, message: classified.error.code });
    }
    this.observer.attemptFinished(ctx, this.endpoint, classified.outcome, ctx.upstreamStatus, this.span);
    this.observer.upstreamFailed(ctx, classified.error);
  }
}
