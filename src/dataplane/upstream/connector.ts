import type { Socket } from 'node:net';
import { buildConnector, errors } from 'undici';

/** undici's connector as it really is: it returns the socket it opens. */
type Connect = (options: buildConnector.Options, callback: buildConnector.Callback) => Socket;

/**
 * A connector for undici's `connect` option. It describes itself (its timeout) when an endpoint's
 * transport key is computed from the pool options.
 */
export interface TimedConnector extends Connect {
  toJSON(): { timeout: number };
}

function onConnectTimeout(socket: Socket, options: buildConnector.Options, timeoutMs: number): void {
  socket.destroy(
    new errors.ConnectTimeoutError(
      `connect to ${options.hostname}:${options.port} timed out after ${timeoutMs} ms`,
    ),
  );
}

/**
 * undici's connector (TCP, and TLS for https: up to the end of the handshake) with a connect timeout
 * that fires on time. undici's own runs on its coarse clock, which ticks about every half second:
 * a 250 ms timeout fired after 0.5-1 s. This one is a plain timer per connection (connections are
 * rare next to requests), and times out as undici's does, with UND_ERR_CONNECT_TIMEOUT.
 * `timeoutMs` 0: no timeout.
 */
export function createConnector(timeoutMs: number): TimedConnector {
  const connect = buildConnector({ timeout: 0 }) as unknown as Connect;
  function connectWithTimeout(options: buildConnector.Options, callback: buildConnector.Callback): Socket {
    if (timeoutMs <= 0) return connect(options, callback);
    let timer: NodeJS.Timeout | undefined;
    const socket = connect(options, function connected(...args: Parameters<buildConnector.Callback>) {
      clearTimeout(timer);
      callback(...args);
    });
    timer = setTimeout(onConnectTimeout, timeoutMs, socket, options, timeoutMs);
    return socket;
  }
  return Object.assign(connectWithTimeout, { toJSON: () => ({ timeout: timeoutMs }) });
}
