/**
 * Per HTTP/2 session bookkeeping on a TLS listener: rapid-reset protection, the idle timeout, and
 * why each session ended (peregrine_http2_sessions_closed_total).
 *
 * Rapid reset (CVE-2023-44487): a client opens a stream and resets it at once, over and over. The
 * reset stream no longer counts against SETTINGS_MAX_CONCURRENT_STREAMS, but the gateway already
 * started routing and dispatching it, so the concurrency limit bounds nothing. Each stream the
 * client resets before its response began counts; past `maxResets` within `window` the session is
 * closed with GOAWAY ENHANCE_YOUR_CALM. (nghttp2 has its own, much looser, reset rate limit.)
 */
import { constants, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { Http2Config } from './tls-schema.ts';

const { NGHTTP2_NO_ERROR, NGHTTP2_ENHANCE_YOUR_CALM } = constants;

/** Label `reason` of peregrine_http2_sessions_closed_total. */
export const HTTP2_CLOSE_REASONS = [
  'client_closed',
  'client_goaway',
  'idle_timeout',
  'shutdown',
  'rapid_reset',
  'invalid_frames',
  'protocol_error',
  'error',
] as const;
export type Http2CloseReason = (typeof HTTP2_CLOSE_REASONS)[number];

export interface SessionGuardHost {
  readonly listener: string;
  readonly limits: Http2Config;
  recordClosed(reason: Http2CloseReason): void;
  /** The session ended (any reason): forget it. */
  forget(session: ServerHttp2Session): void;
}

const kGuard = Symbol('peregrine.http2Guard');
type GuardedStream = ServerHttp2Stream & { [kGuard]?: SessionGuard };

/** Node error codes on a session 'error' → reason. */
function errorReason(code: string | undefined): Http2CloseReason {
  if (code === 'ERR_HTTP2_TOO_MANY_INVALID_FRAMES') return 'invalid_frames';
  if (code === 'ERR_HTTP2_ERROR' || code === 'ERR_HTTP2_SESSION_ERROR') return 'protocol_error';
  if (code === 'ECONNRESET' || code === 'EPIPE') return 'client_closed';
  return 'error';
}

function onStream(this: ServerHttp2Session & { [kGuard]?: SessionGuard }, stream: GuardedStream): void {
  const guard = this[kGuard];
  if (guard === undefined) return;
  guard.openStreams++;
  stream[kGuard] = guard;
  stream.once('close', onStreamClose);
}

function onStreamClose(this: GuardedStream): void {
  const guard = this[kGuard];
  if (guard === undefined) return;
  // Closed with an error code before any response header went out: reset by the client (the
  // gateway itself only resets streams after their headers, when it cuts a response).
  if (this.rstCode !== NGHTTP2_NO_ERROR && !this.headersSent) guard.earlyReset();
  if (--guard.openStreams === 0 && !guard.idleArmed) guard.armIdle();
}

export class SessionGuard {
  readonly session: ServerHttp2Session;
  readonly host: SessionGuardHost;
  openStreams = 0;
  /** The session's idle timer is set; it does not re-arm by itself once it fired. */
  idleArmed = false;
  #resets = 0;
  #windowStart = 0;
  reason: Http2CloseReason | undefined = undefined;

  constructor(session: ServerHttp2Session, host: SessionGuardHost) {
    this.session = session;
    this.host = host;
    (session as ServerHttp2Session & { [kGuard]?: SessionGuard })[kGuard] = this;
    session.on('stream', onStream);
    session.on('error', (err: NodeJS.ErrnoException) => {
      this.reason ??= errorReason(err.code);
    });
    session.on('goaway', () => {
      this.reason ??= 'client_goaway';
    });
    session.once('close', () => {
      host.recordClosed(this.reason ?? 'client_closed');
      host.forget(session);
    });
    this.armIdle();
  }

  /** (Re)arm the idle timeout: fired while streams were open, it waits for the last to close. */
  armIdle(): void {
    if (this.host.limits.idleTimeout <= 0) return;
    this.idleArmed = true;
    this.session.setTimeout(this.host.limits.idleTimeout, this.#onIdle);
  }

  #onIdle = (): void => {
    this.idleArmed = false;
    const session = this.session;
    if (this.openStreams > 0 || session.closed || session.destroyed) return;
    this.reason ??= 'idle_timeout';
    session.close();
  };

  earlyReset(): void {
    const session = this.session;
    if (session.destroyed || session.closed || this.reason !== undefined) return;
    const { maxResets, window } = this.host.limits.rapidReset;
    const now = performance.now();
    if (now - this.#windowStart > window) {
      this.#windowStart = now;
      this.#resets = 0;
    }
    if (++this.#resets > maxResets) {
      this.reason = 'rapid_reset';
      // GOAWAY with ENHANCE_YOUR_CALM, then the socket is closed; frames still queued are dropped.
      session.destroy(
        new Error('HTTP/2 rapid reset: too many streams reset by the client'),
        NGHTTP2_ENHANCE_YOUR_CALM,
      );
    }
  }

  /** Graceful close for shutdown: GOAWAY(NO_ERROR), open streams may finish. */
  drain(): void {
    this.reason ??= 'shutdown';
    if (!this.session.closed && !this.session.destroyed) this.session.close();
  }

  destroy(): void {
    this.reason ??= 'shutdown';
    if (!this.session.destroyed) this.session.destroy();
  }
}
