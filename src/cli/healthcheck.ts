/**
 * `peregrine healthcheck [--config <file>]`: exit 0 when the gateway that runs this config
 * answers `GET /healthz` on its admin address, 1 otherwise. For container health checks: the
 * address comes from the same file (and environment) the gateway started with, so the check
 * follows the config instead of repeating its address. A wildcard bind (0.0.0.0, ::) is reached
 * on loopback. An admin port with TLS is reached over https; on loopback its certificate is not
 * verified (the check asks a process on this machine whether it is alive). With `openProbes` off
 * the check sends the admin token, which it reads as the gateway does.
 */
import { Agent, request } from 'undici';
import { ConfigError, loadConfigFile } from '../config/loader.ts';
import type { Config } from '../config/schema.ts';
import { readTokenRef, SecretLoadError } from '../config/secret-ref.ts';
import { splitAddress } from '../dataplane/listener/listener.ts';
import type { CliOutput } from './validate.ts';

export const EXIT_HEALTHY = 0;
export const EXIT_UNHEALTHY = 1;

/** Time for the whole check; a container runtime's own timeout should be longer. */
const TIMEOUT_MS = 2000;

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);
}

/** The URL of `/healthz` for an admin `host:port` bind address. */
export function healthzUrl(adminAddress: string, tls = false): string {
  const { host, port } = splitAddress(adminAddress);
  const reach = host === '0.0.0.0' || host === '' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `${tls ? 'https' : 'http'}://${reach.includes(':') ? `[${reach}]` : reach}:${port}/healthz`;
}

export async function runHealthcheck(
  file: string,
  out: CliOutput,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  let admin: Config['admin'];
  let url: string;
  const headers: Record<string, string> = {};
  try {
    admin = (await loadConfigFile(file, env)).admin;
    url = healthzUrl(admin.address, admin.tls !== undefined);
    if (admin.auth.token !== undefined && !admin.auth.openProbes)
      headers.authorization = `Bearer ${readTokenRef(admin.auth.token, 'admin token', env)}`;
  } catch (err) {
    if (err instanceof SecretLoadError) {
      out.stderr(`unhealthy: ${err.message}`);
      return EXIT_UNHEALTHY;
    }
    if (!(err instanceof ConfigError)) throw err;
    out.stderr(`unhealthy: ${file} does not load (peregrine validate ${file} says why)`);
    return EXIT_UNHEALTHY;
  }
  const dispatcher = new Agent({
    connect: { rejectUnauthorized: !isLoopback(new URL(url).hostname.replace(/^\[|\]$/g, '')) },
  });
  try {
    const res = await request(url, { headers, dispatcher, signal: AbortSignal.timeout(TIMEOUT_MS) });
    await res.body.dump();
    if (res.statusCode >= 200 && res.statusCode < 300) return EXIT_HEALTHY;
    out.stderr(`unhealthy: ${url} answered ${res.statusCode}`);
  } catch (err) {
    const cause = (err as { code?: string; cause?: { code?: string } }).cause?.code;
    out.stderr(`unhealthy: ${url}: ${cause ?? (err as { code?: string }).code ?? (err as Error).message}`);
  } finally {
    await dispatcher.close();
  }
  return EXIT_UNHEALTHY;
}
