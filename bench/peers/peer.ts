/** What every bench peer process shares: its port from the environment and dying with the bench. */
import type { Server } from 'node:http';

/** The port to listen on, from PORT (the bench picks a free one). */
export function listenPort(): number {
  const port = Number(process.env.PORT);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    process.stderr.write('PORT must be set to a TCP port\n');
    process.exit(2);
  }
  return port;
}

/** The upstream origin to forward to, from UPSTREAM (e.g. http://127.0.0.1:3001). */
export function upstreamOrigin(): string {
  const upstream = process.env.UPSTREAM;
  if (!upstream) {
    process.stderr.write('UPSTREAM must be set to the upstream origin\n');
    process.exit(2);
  }
  return upstream;
}

/**
 * Exit when the bench goes away: on SIGTERM/SIGINT, and when the IPC channel to the parent closes
 * (the parent died, even by SIGKILL), so no peer outlives a run.
 */
export function exitWithParent(...servers: Server[]): void {
  const stop = () => {
    for (const server of servers) {
      server.closeAllConnections();
      server.close();
    }
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  if (process.send) process.on('disconnect', stop);
}
