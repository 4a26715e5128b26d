import type { Socket } from 'node:net';
import { type ConnectionOptions, connect as tlsConnect } from 'node:tls';
import { buildConnector, errors } from 'undici';
import type { UpstreamTls } from '../../tls/upstream-tls.ts';

/** undici's connector as it really is: it returns the socket it opens. */
export type Connector = (options: buildConnector.Options, callback: buildConnector.Callback) => Socket;

/** How an endpoint's connections speak TLS. */
export interface TlsConnect {
  /** Secure context, verification and handshake counters of the endpoint's upstream; follows rotation. */
  readonly tls: UpstreamTls;
  /** Sent as SNI; undefined sends none (an endpoint addressed by IP, without `tls.serverName`). */
  readonly serverName: string | undefined;
  /** ALPN protocol IDs offered. */
  readonly alpn: readonly string[];
}

/** The TLS session of an endpoint's last verified connection, and the material it was made under. */
interface SessionSlot {
  session: Buffer | undefined;
  generation: number;
}

/**
 * True while undici is being handed a connection just made. undici writes the requests waiting
 * for it synchronously inside that callback, so a dispatch handler whose `onRequestStart` runs
 * then is on a fresh connection, and one whose runs at any other time is on a reused one (the
 * pool had it idle, or it had just finished a response). undici says neither in its handler API.
 */
let handingOver = false;

/** Whether the request starting now goes out on a connection just made (see `handingOver`). */
export function onFreshConnection(): boolean {
  return handingOver;
}

function handOver(callback: buildConnector.Callback, err: Error | null, socket: Socket | null): void {
  handingOver = err === null;
  try {
    (callback as (err: Error | null, socket: Socket | null) => void)(err, socket);
  } finally {
    handingOver = false;
  }
}

function onConnectTimeout(socket: Socket, options: buildConnector.Options, timeoutMs: number): void {
  socket.destroy(
    new errors.ConnectTimeoutError(
      `connect to ${options.hostname}:${options.port} timed out after ${timeoutMs} ms`,
    ),
  );
}

/**
 * The TLS connection of an `https://` endpoint. What undici's own connector would do, except:
 * the server name is the endpoint's (`tls.serverName`, else its host), never the Host a client
 * sent; the secure context is read per connection, so a rotated certificate or CA is used by the
 * next connection while open ones carry on; the peer is verified by host name or by SPIFFE ID
 * (UpstreamTls); ALPN offers exactly what the upstream's `protocol` says; handshakes are counted
 * as new or resumed; and the cached session is dropped when the material rotates (a resumed
 * session would present the old client certificate, and skip verification against the new CA).
 * Node emits 'session' only for a connection whose verification passed, `checkServerIdentity`
 * included, so a session from a refused peer is never resumed.
 */
function tlsConnector(o: TlsConnect): Connector {
  const slot: SessionSlot = { session: undefined, generation: -1 };
  return function connectTls(options: buildConnector.Options, callback: buildConnector.Callback): Socket {
    const tls = o.tls;
    const generation = tls.generation;
    const connectOptions: ConnectionOptions = {
      host: options.hostname,
      port: Number(options.port) || 443,
      servername: o.serverName,
      secureContext: tls.context,
      session: slot.generation === generation ? slot.session : undefined,
      ALPNProtocols: o.alpn as string[],
    };
    // Only when set: an explicit undefined would replace Node's host name check.
    if (tls.checkServerIdentity !== undefined) connectOptions.checkServerIdentity = tls.checkServerIdentity;
    const socket = tlsConnect(connectOptions);
    let cb: buildConnector.Callback | null = callback;
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 60_000);
    socket.on('session', function onSession(session: Buffer) {
      slot.session = session;
      slot.generation = generation;
    });
    socket.once('secureConnect', function onSecureConnect() {
      tls.handshake(socket.isSessionReused());
      const done = cb;
      cb = null;
      done?.(null, socket);
    });
    socket.on('error', function onError(err: Error) {
      const done = cb;
      cb = null;
      done?.(err, null);
    });
    return socket;
  };
}

/**
 * undici's connector (TCP) or ours (TLS, see tlsConnector), with a connect timeout that fires on
 * time. undici's own runs on its coarse clock, which ticks about every half second: a 250 ms
 * timeout fired after 0.5-1 s. This one is a plain timer per connection (connections are rare next
 * to requests), up to the end of the TLS handshake, and times out as undici's does, with
 * UND_ERR_CONNECT_TIMEOUT. `timeoutMs` 0: no timeout. Either way the connection is handed over
 * marked fresh (`onFreshConnection`).
 */
export function createConnector(timeoutMs: number, tls?: TlsConnect): Connector {
  const connect =
    tls === undefined ? (buildConnector({ timeout: 0 }) as unknown as Connector) : tlsConnector(tls);
  return function connectMarked(options: buildConnector.Options, callback: buildConnector.Callback): Socket {
    let timer: NodeJS.Timeout | undefined;
    const socket = connect(options, function connected(err: Error | null, sock: Socket | null) {
      clearTimeout(timer);
      handOver(callback, err, sock);
    } as buildConnector.Callback);
    if (timeoutMs > 0) timer = setTimeout(onConnectTimeout, timeoutMs, socket, options, timeoutMs);
    return socket;
  };
}
