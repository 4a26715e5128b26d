/**
 * A fleet of registered instances in one process: INSTANCES (1000) of Peregrine's own
 * RegistrationClient, spread over SERVICES (10) services `hb-<k>`, each registering once and then
 * renewing its lease every third of TTL_MS (15 s: every 5 s, ±10% jitter) over its own keep-alive
 * connection, as that many separate services would. Their starts are spread evenly over RAMP_MS
 * (5 s), so renewals are too. Addresses are 10.x.y.1:8080 (nothing is sent to them).
 *
 *   REGISTRY=http://127.0.0.1:9902 PEREGRINE_BENCH_REGISTRY_TOKEN=… node bench/peers/heartbeats.ts
 *
 * The IPC message `stats` is answered with what the clients saw: registrations (first and again
 * after a 404), failures and the first few of their messages. Killed, not closed: the bench
 * measures renewals, not deregistrations.
 */
import { RegistrationClient } from '../../src/registry/client.ts';
import { REGISTRY_TOKEN_ENV } from '../lib/registry-config.ts';

export interface FleetStats {
  readonly instances: number;
  /** Clients whose first registration succeeded. */
  readonly started: number;
  readonly registered: number;
  readonly reregistered: number;
  readonly failures: number;
  readonly failureSamples: readonly string[];
}

/** The address of instance `i`: 10.x.y.1, distinct for the first 65,536. */
export function fleetAddress(i: number): string {
  return `10.${(i >> 8) & 255}.${i & 255}.1`;
}

function intEnv(name: string, fallback: number): number {
  const n = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer`);
  return n;
}

async function main(): Promise<void> {
  const registry = process.env.REGISTRY;
  const token = process.env[REGISTRY_TOKEN_ENV];
  if (!registry || !token) throw new Error(`REGISTRY and ${REGISTRY_TOKEN_ENV} must be set`);
  const instances = intEnv('INSTANCES', 1000);
  const services = intEnv('SERVICES', 10);
  const ttlMs = intEnv('TTL_MS', 15_000);
  const rampMs = intEnv('RAMP_MS', 5000);
  const stats = { started: 0, registered: 0, reregistered: 0, failures: 0, failureSamples: [] as string[] };
  process.on('message', (m) => {
    if (m === 'stats') process.send?.({ instances, ...stats } satisfies FleetStats);
  });
  process.on('disconnect', () => process.exit(0));
  for (let i = 0; i < instances; i++) {
    const client = new RegistrationClient({
      registry,
      service: `hb-${i % services}`,
      id: `i-${i}`,
      address: fleetAddress(i),
      port: 8080,
      token,
      ttlMs,
    });
    client.on('registered', () => stats.registered++);
    client.on('reregistered', () => stats.reregistered++);
    client.on('failure', (err: Error) => {
      stats.failures++;
      if (stats.failureSamples.length < 5) stats.failureSamples.push(`${client.id}: ${err.message}`);
    });
    setTimeout(
      () =>
        client.start().then(
          () => stats.started++,
          (err: Error) => {
            stats.failures++;
            if (stats.failureSamples.length < 5) stats.failureSamples.push(`${client.id}: ${err.message}`);
          },
        ),
      (i * rampMs) / instances,
    );
  }
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    process.stderr.write(`heartbeats: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
