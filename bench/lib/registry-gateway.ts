/**
 * A gateway of the registry benchmarks: started from the Peregrine under test with a config from
 * registry-config.ts and the bench's registry token, pinned like the targets (BENCH_PIN).
 */
import { join } from 'node:path';
import { pinTarget } from './pin.ts';
import type { Managed } from './proc.ts';
import {
  benchRegistryToken,
  REGISTRY_TOKEN_ENV,
  type RegistryGatewayOptions,
  registryGatewayYaml,
} from './registry-config.ts';
import { type BenchContext, startPeregrine } from './targets.ts';

export interface RegistryGateway {
  proc: Managed;
  /** The data-plane listener, `http://127.0.0.1:<port>/`. */
  url: string;
  admin: string;
  /** The registration API's origin (when it has one). */
  registry: string;
}

export async function startRegistryGateway(
  ctx: BenchContext,
  name: string,
  o: Omit<RegistryGatewayOptions, 'listenPort' | 'adminPort'>,
): Promise<RegistryGateway> {
  const gw = await startPeregrine({
    name: `peregrine-${name}`,
    dir: ctx.peregrineDir,
    configFile: join(ctx.tmpDir, `${name}.yaml`),
    yaml: (listenPort, adminPort) => registryGatewayYaml({ ...o, listenPort, adminPort }),
    env: { [REGISTRY_TOKEN_ENV]: benchRegistryToken() },
    // warn and above only: the tail explains a gateway that stopped.
    stdout: 'pipe',
  });
  if (ctx.pin) pinTarget(ctx.pin, gw.proc.pid);
  return { ...gw, registry: `http://127.0.0.1:${o.port}` };
}
