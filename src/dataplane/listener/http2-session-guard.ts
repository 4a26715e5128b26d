/**
 * Per HTTP/2 session bookkeeping on a TLS listener: rapid-reset protection, the idle timeout, the
 * liveness of the peer, and why each session ended (peregrine_http2_sessions_closed_total).
 *
 * Rapid reset (CVE-2023-44487): a client opens a stream and resets it at once, over and over. The
 * reset stream no longer counts against SETTINGS_MAX_CONCURRENT_STREAMS, but the gateway already
 * started routing and dispatching it, so the concurrency limit bounds nothing. Each stream the
 * client resets before its response began counts; past `maxResets` within `window` the session is
 * closed with GOAWAY ENHANCE_YOUR_CALM. (nghttp2 has its own, much looser, reset rate limit.)
 *
 * Liveness: Node's http2 does not notice a peer whose connection vanished while a write to it is
 * blocked (a slow-reading client killed mid-download: its RST is never read), nor one that went
 * without FIN or RST at all (nodejs/node#61304, #42710). Such a session, its socket and the
 * upstream attempts of its streams would stay forever. See `tick`.
 */
import { constants, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import { FIELD_CHECK_LOST, type Http2FieldCheck } from './http2-field-check.ts';
import type { Http2FieldTap } from './http2-field-tap.ts';
import type { Http2Config } from './http2-schema.ts';

const { NGHTTP2_NO_ERROR, NGHTTP2_ENHANCE_YOUR_CALM } = constants;

/** Label `reason` of peregrine_http2_sessions_closed_total. */
export const HTTP2_CLOSE_REASONS = [
  'client_closed',
  'client_goaway',
  'idle_timeout',
  'shutdown',
  'rapid_reset',
  'unresponsive',
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
type GuardedSession = ServerHttp2Session & { [kGuard]?: SessionGuard };

/** Node error codes on a session 'error' → reason. */
function errorReason(code: string | undefined): Http2CloseReason {
  if (code === 'ERR_HTTP2_TOO_MANY_INVALID_FRAMES') return 'invalid_frames';
  if (code === 'ERR_HTTP2_ERROR' || code === 'ERR_HTTP2_SESSION_ERROR' || code === FIELD_CHECK_LOST)
    return 'protocol_error';
  if (code === 'ECONNRESET' || code === 'EPIPE') return 'client_closed';
  return 'error';
}

/**
 * Whether the request of this stream had a malformed header block (true once per stream): it must
 * be refused, never forwarded without the fields nghttp2 dropped.
 */
export function isMalformedStream(stream: ServerHttp2Stream): boolean {
  const guard = (stream.session as GuardedSession | undefined)?.[kGuard];
  const id = stream.id;
  return guard !== undefined && id !== undefined && guard.fields.take(id);
}

function onStream(this: GuardedSession, stream: GuardedStream): void {
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

/** How long a session ended on purpose may take to send its GOAWAY before it is cut. */
const GOAWAY_GRACE_MS = 1000;

/** Liveness ticks per `unresponsiveTimeout`: quiet for two, a PING; for four, destroyed. */
export const LIVENESS_TICKS = 4;
const PING_AFTER_TICKS = 2;

function ignorePingResult(): void {}

export class SessionGuard {
  readonly session: ServerHttp2Session;
  /** What the session runs on: the field check in front of the TLS connection. */
  readonly tap: Http2FieldTap;
  /** The session's TLS connection (the session's own `socket` is a proxy that cannot destroy it). */
  readonly socket: TLSSocket;
  /** What the client's header blocks really held (http2-field-check.ts). */
  readonly fields: Http2FieldCheck;
  readonly host: SessionGuardHost;
  openStreams = 0;
  /** The session's idle timer is set; it does not re-arm by itself once it fired. */
  idleArmed = false;
  #resets = 0;
  #windowStart = 0;
  #seenRead: number;
  #seenWritten: number;
  #quietTicks = 0;
  /** A PING went out since the last tick: the bytes written since are ours, not a sign of life. */
  #pinged = false;
  reason: Http2CloseReason | undefined = undefined;

  constructor(session: ServerHttp2Session, tap: Http2FieldTap, host: SessionGuardHost) {
    this.session = session;
    this.tap = tap;
    const socket = tap.socket;
    this.socket = socket;
    this.fields = tap.check;
    this.host = host;
    this.#seenRead = socket.bytesRead;
    this.#seenWritten = socket.bytesWritten;
    (session as GuardedSession)[kGuard] = this;
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
      this.#endWith(
        new Error('HTTP/2 rapid reset: too many streams reset by the client'),
        NGHTTP2_ENHANCE_YOUR_CALM,
      );
    }
  }

  /**
   * End the session with GOAWAY `code`; what the client sent after this is dropped unread. The
   * GOAWAY goes out before the session is destroyed, which over the field tap would lose it
   * (http2-field-tap.ts); a client that does not let it out is cut after a grace period.
   */
  #endWith(err: Error, code: number): void {
    const { session, tap } = this;
    tap.stopReading();
    session.goaway(code);
    const end = (): void => {
      clearTimeout(grace);
      if (!session.destroyed) session.destroy(err, code);
    };
    const grace = setTimeout(() => {
      end();
      this.socket.destroy();
    }, GOAWAY_GRACE_MS);
    grace.unref();
    tap.afterGoaway(end);
  }

  /**
   * One liveness tick, `unresponsiveTimeout / LIVENESS_TICKS` apart. A sign of life is a byte read
   * from the peer, or a byte of ours that its TCP took: `bytesWritten` only grows as the kernel's
   * send buffer drains, so it stops for a peer that vanished or stopped reading, and keeps moving
   * for one that reads slowly. Quiet for two ticks, the peer gets a PING (a live one answers, idle
   * or not; Node's idle timer does not count it as traffic); quiet for four (so for at least
   * `unresponsiveTimeout`), the session is destroyed with its streams, whose upstream attempts
   * end as the client's (`client_abort`), and its socket with it, which Node keeps open while a
   * write to it is pending. A socket already gone takes its session with it at once.
   */
  tick(): void {
    const { session, socket } = this;
    if (socket.destroyed) {
      this.reason ??= 'client_closed';
      if (!session.destroyed) session.destroy();
      return;
    }
    // A session closed gracefully is destroyed by Node before its socket, which then waits for the
    // peer to finish: the socket is watched until it closes (the guard is forgotten only then).
    const read = socket.bytesRead;
    const written = socket.bytesWritten;
    const alive = read !== this.#seenRead || (written !== this.#seenWritten && !this.#pinged);
    this.#seenRead = read;
    this.#seenWritten = written;
    this.#pinged = false;
    if (alive) {
      this.#quietTicks = 0;
      return;
    }
    if (++this.#quietTicks === PING_AFTER_TICKS) {
      if (session.destroyed) return;
      try {
        this.#pinged = session.ping(ignorePingResult);
      } catch {
        // Closing, or too many PINGs outstanding: the ticks go on counting.
      }
    } else if (this.#quietTicks >= LIVENESS_TICKS) {
      this.reason ??= 'unresponsive';
      if (!session.destroyed) session.destroy();
      socket.destroy();
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
