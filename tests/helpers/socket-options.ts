/**
 * What Node has set on a socket. Node has no getsockopt; net.Socket records TCP_NODELAY in its own
 * flag whenever it sets the option (`setNoDelay`, a server's or a connect's `noDelay`), which is
 * what a test can read.
 */
import type { Socket } from 'node:net';

/** Whether Node set TCP_NODELAY on the socket (or will, on connect). */
export function noDelayOf(socket: Socket): boolean {
  const flag = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'kSetNoDelay');
  if (flag === undefined) throw new Error("net.Socket no longer records TCP_NODELAY as 'kSetNoDelay'");
  return (socket as unknown as Record<symbol, unknown>)[flag] === true;
}
