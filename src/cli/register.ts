/**
 * `peregrine register`: keep a service instance registered for a process that cannot embed the
 * client (any language, a sidecar container, a shell script). Registers, renews, re-registers on
 * 404, and on SIGTERM/SIGINT drains, waits, deregisters and exits 0. The token is read from an
 * environment variable or a file, never from the command line (where `ps` would show it).
 *
 * Exit codes: 0 after a clean deregistration, 1 when the registry refuses the registration
 * (bad input, credential), 2 for usage errors.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parseDuration } from '../config/duration.ts';
import {
  RegistrationClient,
  type RegistrationClientOptions,
  RegistrationRejectedError,
} from '../registry/client.ts';
import type { CliOutput } from './validate.ts';

export const REGISTER_USAGE = `Usage: peregrine register --service <name> --port <port> --registry <url> [options]

  --service <name>        service to register as (the credential must allow it)
  --port <port>           port the instance serves on
  --registry <url>        registration API, e.g. https://registry.internal:9902
  --address <ip>          IP address to register (default: as the registry sees this host)
  --id <id>               instance id (default: <hostname>-<port>)
  --protocol http|https   how gateways reach the instance (default http)
  --zone <zone>           --version <version>   --weight <1-1000>
  --metadata <key=value>  repeatable
  --ttl <duration>        lease TTL, e.g. 15s (default 15s)
  --token-env <VAR>       bearer token from this environment variable
  --token-file <file>     bearer token from this file
  --ca <file>             CA bundle for the registry's certificate
  --cert <file> --key <file>   client certificate (mTLS identity)
  --drain-delay <duration>     between drain and deregistration on exit (default 2s)
`;

class UsageError extends Error {}

function duration(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const ms = parseDuration(value);
  if (ms === undefined)
    throw new UsageError(`--${name}: invalid duration ${JSON.stringify(value)} (e.g. 15s)`);
  return ms;
}

function readFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`${what} ${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** The client options from the command line; throws UsageError. */
export function registerOptions(argv: string[], env: NodeJS.ProcessEnv): RegistrationClientOptions {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      service: { type: 'string' },
      port: { type: 'string' },
      registry: { type: 'string' },
      address: { type: 'string' },
      id: { type: 'string' },
      protocol: { type: 'string' },
      zone: { type: 'string' },
      version: { type: 'string' },
      weight: { type: 'string' },
      metadata: { type: 'string', multiple: true },
      ttl: { type: 'string' },
      'token-env': { type: 'string' },
      'token-file': { type: 'string' },
      ca: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      'drain-delay': { type: 'string' },
    },
  });
  for (const required of ['service', 'port', 'registry'] as const)
    if (values[required] === undefined) throw new UsageError(`--${required} is required`);
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError('--port must be 1-65535');
  if (values.protocol !== undefined && values.protocol !== 'http' && values.protocol !== 'https')
    throw new UsageError('--protocol must be http or https');
  const weight = values.weight === undefined ? undefined : Number(values.weight);
  if (weight !== undefined && !Number.isInteger(weight)) throw new UsageError('--weight must be an integer');
  const metadata: Record<string, string> = {};
  for (const pair of values.metadata ?? []) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--metadata ${JSON.stringify(pair)}: expected key=value`);
    metadata[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  if (values['token-env'] !== undefined && values['token-file'] !== undefined)
    throw new UsageError('--token-env and --token-file: one or the other');
  let token: string | undefined;
  if (values['token-env'] !== undefined) {
    token = env[values['token-env']];
    if (!token) throw new UsageError(`--token-env: ${values['token-env']} is not set`);
  } else if (values['token-file'] !== undefined) {
    token = readFile(values['token-file'], '--token-file').trim();
  }
  if ((values.cert === undefined) !== (values.key === undefined))
    throw new UsageError('--cert and --key go together');
  return {
    registry: values.registry!,
    service: values.service!,
    id: values.id,
    port,
    address: values.address,
    protocol: values.protocol as 'http' | 'https' | undefined,
    zone: values.zone,
    version: values.version,
    weight,
    metadata,
    ttlMs: duration(values.ttl, 'ttl', 15_000),
    token,
    tls: {
      ca: values.ca === undefined ? undefined : readFile(values.ca, '--ca'),
      cert: values.cert === undefined ? undefined : readFile(values.cert, '--cert'),
      key: values.key === undefined ? undefined : readFile(values.key, '--key'),
    },
    drainDelayMs: duration(values['drain-delay'], 'drain-delay', 2000),
  };
}

/**
 * Run until SIGTERM or SIGINT. Resolves with the exit code once the instance is deregistered (or
 * the registration was refused).
 */
export async function runRegister(argv: string[], out: CliOutput, env = process.env): Promise<number> {
  let options: RegistrationClientOptions;
  try {
    options = registerOptions(argv, env);
  } catch (err) {
    if (!(err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')))
      throw err;
    out.stderr(`peregrine register: ${(err as Error).message}\n\n${REGISTER_USAGE}`);
    return 2;
  }
  let client: RegistrationClient;
  try {
    client = new RegistrationClient(options);
  } catch (err) {
    out.stderr(`peregrine register: ${(err as Error).message}`);
    return 2;
  }
  const where = `${client.service}/${client.id}`;
  let lastFailure = '';
  client.on('failure', (err: Error) => {
    // One line per distinct problem, not one per retry.
    if (err.message !== lastFailure) out.stderr(`peregrine register: ${where}: ${err.message} (retrying)`);
    lastFailure = err.message;
  });
  client.on('registered', (i: { address: string; port: number; ttlMs: number }) => {
    lastFailure = '';
    out.stdout(`registered ${where} at ${i.address}:${i.port} (lease ${i.ttlMs} ms)`);
  });
  client.on('reregistered', () => out.stdout(`registry lost ${where}; registering again`));
  // The client's timers do not hold a process open (it is a library); this command's whole job is to.
  const keepAlive = setInterval(() => undefined, 1 << 30);
  let onSignal: (signal: NodeJS.Signals) => void = () => undefined;
  const release = (): void => {
    clearInterval(keepAlive);
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  };
  const stopped = new Promise<void>((resolve) => {
    onSignal = (signal) => {
      release();
      out.stdout(`${signal}: draining ${where}, then deregistering`);
      resolve();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  const started = client.start().then(
    () => undefined,
    (err: unknown) => err,
  );
  const first = await Promise.race([started, stopped.then(() => 'stopped' as const)]);
  if (first instanceof RegistrationRejectedError) {
    release();
    out.stderr(`peregrine register: ${where}: ${first.message}`);
    await client.close();
    return 1;
  }
  if (first !== 'stopped') await stopped;
  await client.close();
  out.stdout(`deregistered ${where}`);
  return 0;
}
