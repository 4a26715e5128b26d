/**
 * Connections a listening port holds, from /proc/net/tcp (Linux; IPv4): the heartbeat benchmark
 * shows with it whether the fleet's connections stay open between renewals.
 */
import { readFileSync } from 'node:fs';

const ESTABLISHED = '01';

/** Established connections whose local port is `port`, in a /proc/net/tcp table. */
export function establishedOn(table: string, port: number): number {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  let n = 0;
  for (const line of table.split('\n').slice(1)) {
    const [, local, , state] = line.trim().split(/\s+/);
    if (state === ESTABLISHED && local?.endsWith(`:${hexPort}`)) n++;
  }
  return n;
}

/** The same, on this machine now; undefined where there is no /proc/net/tcp. */
export function establishedConnections(port: number): number | undefined {
  try {
    return establishedOn(readFileSync('/proc/net/tcp', 'utf8'), port);
  } catch {
    return undefined;
  }
}
