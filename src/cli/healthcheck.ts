/**
 * `peregrine healthcheck [--config <file>]`: exit 0 when the gateway that runs this config
 * answers `GET /healthz` on its admin address, 1 otherwise. For container health checks: the
 * address comes from the same file (and environment) the gateway started with, so the check
 * follows the config instead of repeating its address. A wildcard bind (0.0.0.0, ::) is reached
 * on loopback.
 */
import { ConfigError, loadConfigFile } from '../config/loader.ts';
import { splitAddress } from '../dataplane/listener/listener.ts';
import type { CliOutput } from './validate.ts';

export const EXIT_HEALTHY = 0;
export const EXIT_UNHEALTHY = 1;

/** Time for the whole check; a container runtime's own timeout should be longer. */
const TIMEOUT_MS = 2000;

/** The URL of `/healthz` for an admin `host:port` bind address. */
export function healthzUrl(adminAddress: string): string {
  const { host, port } = splitAddress(adminAddress);
  const reach = host === '0.0.0.0' || host === '' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `http://${reach.includes(':') ? `[${reach}]` : reach}:${port}/healthz`;
}

export async function runHealthcheck(file: string, out: CliOutput): Promise<number> {
  let url: string;
  try {
    url = healthzUrl((await loadConfigFile(file)).admin.address);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    out.stderr(`unhealthy: ${file} does not load (peregrine validate ${file} says why)`);
    return EXIT_UNHEALTHY;
  }
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS) });
    await res.arrayBuffer();
    if (res.ok) return EXIT_HEALTHY;
    out.stderr(`unhealthy: ${url} answered ${res.status}`);
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code;
    out.stderr(`unhealthy: ${url}: ${cause ?? (err as Error).message}`);
  }
  return EXIT_UNHEALTHY;
}
