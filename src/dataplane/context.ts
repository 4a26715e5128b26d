import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Span } from '@opentelemetry/api';
import type { Snapshot } from '../control/snapshot.ts';
import type { ErrorCode } from '../errors.ts';
import type { RoutePlan } from './filters/chain.ts';
import type { ResponseForwarder } from './forward/forwarder.ts';
import type { Tunnel } from './forward/websocket.ts';
import type { Pipeline } from './pipeline.ts';
import type { CompiledRoute } from './routing/route-table.ts';
import type { Cluster } from './upstream/cluster.ts';
import type { Endpoint } from './upstream/endpoint.ts';

/** A stage's entry in the decision log: what was decided and why, in a few words. */
export interface Decision {
  readonly stage: string;
  readonly detail: string;
}

/**
 * One object per request carrying what the stages need. Fields are plain and pre-declared so the
 * object keeps one shape on the hot path.
 */
export class RequestContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly snapshot: Snapshot;
  readonly startedAt: number;
  requestId = '';
  /** Peer address, captured at arrival (the socket is gone by the time the request finishes). */
  clientAddress = '';
  path = '';
  query = '';
  route: CompiledRoute | undefined = undefined;
  cluster: Cluster | undefined = undefined;
  endpoint: Endpoint | undefined = undefined;
  span: Span | undefined = undefined;
  traceId = '';
  spanId = '';
  sampled = false;
  attempts = 0;
  upstreamStartedAt = 0;
  upstreamDurationMs: number | undefined = undefined;
  upstreamStatus = 0;
  requestBytes = 0;
  responseBytes = 0;
  /** Verified JWT claims (auth filter). */
  claims: Readonly<Record<string, unknown>> | undefined = undefined;
  /** Authenticated subject: the JWT `sub`, for logs and spans. */
  subject: string | undefined = undefined;
  /** Verified peer identity from mTLS (SPIFFE URI, DNS name or subject). */
  identity: string | undefined = undefined;
  /** Extra headers for the upstream request, set by filters, as [name, value, ...]. */
  upstreamHeaders: string[] | undefined = undefined;
  /**
   * Headers policies add to the response the client gets (rate limit fields), as [name, value,
   * ...]; see addResponseHeader. Not added to an upstream's 429, which passes unchanged.
   */
  responseHeaders: string[] | undefined = undefined;
  /** The client's address through trusted proxies' X-Forwarded-For, once a policy has read it. */
  forwardedAddress: string | undefined = undefined;
  /** The rate limit policy whose decision the access log reports, and that decision. */
  rateLimitPolicy: string | undefined = undefined;
  rateLimitOutcome: string | undefined = undefined;
  /** Local failure code when the gateway produced or cut the response. */
  code: ErrorCode | undefined = undefined;
  /** The in-flight upstream attempt, while one runs. */
  forwarder: ResponseForwarder | undefined = undefined;
  totalTimer: NodeJS.Timeout | undefined = undefined;
  decisions: Decision[] | undefined = undefined;
  finished = false;
  /** The route's compiled policies, header policy and admission gate. */
  plan: RoutePlan | undefined = undefined;
  /** Admitted by the upstream's breaker/bulkhead: release once when the request ends. */
  admitted = false;
  /** AdmissionTicket: the circuit breaker ticket `Cluster.admit` gave this request (-1: none). */
  breakerTicket = -1;
  firstAttemptAt = 0;
  /** No body, or the body is held in `body` and can be sent again. */
  bodyReplayable = false;
  body: Buffer | undefined = undefined;
  /** Endpoints already tried (PickContext: a retry prefers another one). */
  tried: Endpoint[] | undefined = undefined;
  retryTimer: NodeJS.Timeout | undefined = undefined;
  pendingRetry: { readonly delayMs: number; readonly reason: string } | undefined = undefined;
  retryReason: string | undefined = undefined;
  /** An attempt failed on a stale pooled connection and was (or could have been) sent again. */
  staleRetried = false;
  backoffMs = 0;
  /** When the current attempt's response head arrived (0 before). */
  headAt = 0;
  totalExpired = false;
  /** A WebSocket handshake: the client's socket and what the upgrade needs (undefined: a request). */
  tunnel: Tunnel | undefined = undefined;
  /** The connection, kept for after the response detached from it. */
  socket: import('node:stream').Duplex | undefined = undefined;
  pipeline: Pipeline | undefined = undefined;

  /** PickContext: consistent hashing on a header or cookie. */
  get headers(): IncomingMessage['headers'] {
    return this.req.headers;
  }

  constructor(req: IncomingMessage, res: ServerResponse, snapshot: Snapshot, startedAt: number) {
    this.req = req;
    this.res = res;
    this.snapshot = snapshot;
    this.startedAt = startedAt;
  }

  decide(stage: string, detail: string): void {
    if (this.decisions === undefined) this.decisions = [{ stage, detail }];
    else this.decisions.push({ stage, detail });
  }
}

/**
 * Add a header to the client's response. A name already added gets the value appended to its
 * list (`a, b`): the fields policies add are lists, and one field line per name suits HTTP/2's
 * compatibility API as well as HTTP/1.1.
 */
export function addResponseHeader(ctx: RequestContext, name: string, value: string): void {
  const list = ctx.responseHeaders;
  if (list === undefined) {
    ctx.responseHeaders = [name, value];
    return;
  }
  for (let i = 0; i < list.length; i += 2) {
    if (list[i] === name) {
      list[i + 1] = `${list[i + 1]}, ${value}`;
      return;
    }
  }
  list.push(name, value);
}

const kClosing = Symbol('peregrine.closing');
/** Requests of a keep-alive connection still being answered (the pipeline counts them). */
export const kPending = Symbol('peregrine.pending');
/** What the pipeline keeps on a client connection's socket. */
export type ConnectionSocket = import('node:stream').Duplex & { [kClosing]?: true; [kPending]?: number };

/**
 * A response on this HTTP/1.x connection carries (or will carry) `Connection: close`: the client
 * asked for it, or the gateway decided it (a framing error, draining). RFC 9112 §9.6: the server
 * must not process any request received on the connection after that one; a client that
 * pipelined more requests learns from the close that they were not processed and may send them
 * again elsewhere. Without this, Node still emits those requests and they would reach upstreams.
 */
export function markConnectionClosing(socket: import('node:stream').Duplex | undefined): void {
  if (socket !== undefined) (socket as ConnectionSocket)[kClosing] = true;
}

export function isConnectionClosing(socket: import('node:stream').Duplex): boolean {
  return (socket as ConnectionSocket)[kClosing] === true;
}

/**
 * Whether the request being answered is the only one still pending on its connection: a response
 * that closes the connection (draining) must wait for the last one, or the responses of requests
 * pipelined after it, already on their way to upstreams, would be lost with the connection.
 */
export function isLastPending(socket: import('node:stream').Duplex | undefined): boolean {
  return socket === undefined || ((socket as ConnectionSocket)[kPending] ?? 0) <= 1;
}
