/**
 * `npm run demo`: Peregrine in one command. Starts
 *
 * - a service registry on Redis: a local redis-server on a random loopback port, when one is
 *   installed (REDIS_SERVER_BIN, else `redis-server` on PATH); otherwise the in-memory store;
 * - the gateway (bin/peregrine.js) with that registry, routing `/` to the service `hello`, whose
 *   endpoints are whatever instances are registered;
 * - two instances of examples/demo/hello-service.ts, which register themselves;
 * - a trickle of traffic through the gateway, one request every PEREGRINE_DEMO_INTERVAL_MS (500);
 *
 * and prints where to look. Ctrl-C stops it all in order: the instances drain and deregister, then
 * the gateway drains and stops, then Redis; the temporary directory is removed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { type LocalRedis, redisServerInstalled, startLocalRedis } from './local-redis.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SERVICE = 'hello';
const INSTANCES = [
  { id: 'hello-1', zone: 'zone-a' },
  { id: 'hello-2', zone: 'zone-b' },
];
const INTERVAL_MS = Number(process.env.PEREGRINE_DEMO_INTERVAL_MS ?? 500);
const TOKEN_ENV = 'PEREGRINE_DEMO_REGISTRY_TOKEN';

const say = (line: string): void => void process.stdout.write(`${line}\n`);

const dir = mkdtempSync(join(tmpdir(), 'peregrine-demo-'));
const token = randomBytes(24).toString('hex');
const children: ChildProcess[] = [];
let redis: LocalRedis | undefined;

/** What a signal does: before everything is up, give up at once; afterwards, stop in order. */
let onSignal = (_signal: NodeJS.Signals): void => process.exit(130);
process.on('SIGINT', (s) => onSignal(s));
process.on('SIGTERM', (s) => onSignal(s));

// Whatever happens to the demo, nothing it started outlives it.
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/** Signal a child and wait for it to exit; SIGKILL after `ms`. True when it exited by itself. */
async function stopChild(child: ChildProcess, signal: NodeJS.Signals, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode === 0;
  const exited = new Promise<boolean>((resolve) => child.once('exit', (code) => resolve(code === 0)));
  child.kill(signal);
  const clean = await Promise.race([exited, sleep(ms, undefined)]);
  if (clean !== undefined) return clean;
  child.kill('SIGKILL');
  await exited;
  return false;
}

function gatewayConfig(): Record<string, unknown> {
  const otlp = process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
  return {
    listeners: [{ name: 'edge', address: '127.0.0.1:0' }],
    admin: { address: '127.0.0.1:0' },
    telemetry: {
      serviceName: 'peregrine-demo',
      // Every request traced: to an OpenTelemetry collector when one is configured, else to the log.
      tracing: { exporter: otlp ? 'otlp' : 'console', sampleRatio: 1 },
    },
    lifecycle: { watchConfig: false, drainTimeout: '5s' },
    ...(redis && { redis: { url: redis.url, keyPrefix: 'peregrine-demo:' } }),
    registry: {
      store: redis ? 'redis' : 'memory',
      gatewayId: 'demo-gateway',
      listener: { address: '127.0.0.1:0' },
      credentials: { tokens: [{ name: 'demo', env: TOKEN_ENV, services: [SERVICE] }] },
      // The instances run on this machine.
      addresses: { allowLoopback: true },
    },
    upstreams: { [SERVICE]: { discovery: { registry: SERVICE } } },
    routes: [{ name: SERVICE, match: { path: '/' }, upstream: SERVICE }],
  };
}

interface GatewayAddresses {
  readonly edge: string;
  readonly admin: string;
  readonly registry: string;
}

/** Start the gateway; its output goes to gateway.log. Resolves with its addresses once it is ready. */
function startGateway(configFile: string): Promise<{ child: ChildProcess; addresses: GatewayAddresses }> {
  const child = spawn(process.execPath, [join(ROOT, 'bin/peregrine.js'), 'run', '--config', configFile], {
    cwd: ROOT,
    env: { ...process.env, [TOKEN_ENV]: token },
    // A group of its own: a Ctrl-C in the terminal reaches the demo, which stops the gateway last.
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const log = createWriteStream(join(dir, 'gateway.log'));
  child.stderr!.pipe(log);
  return new Promise((resolve, reject) => {
    let registry: string | undefined;
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      log.write(`${line}\n`);
      if (!line.startsWith('{')) return;
      let entry: { msg?: string; address?: string; admin?: string; listeners?: Record<string, string> };
      try {
        entry = JSON.parse(line);
      } catch {
        return;
      }
      if (entry.msg === 'registry API listening') registry = entry.address;
      if (entry.msg === 'peregrine ready' && entry.listeners?.edge && entry.admin && registry)
        resolve({ child, addresses: { edge: entry.listeners.edge, admin: entry.admin, registry } });
    });
    child.once('exit', (code) =>
      reject(new Error(`the gateway exited (${code}) before it was ready; see ${join(dir, 'gateway.log')}`)),
    );
  });
}

/** Start one instance of the demo service; resolves once it has registered. */
function startInstance(registryUrl: string, id: string, zone: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [join(ROOT, 'examples/demo/hello-service.ts')], {
    cwd: ROOT,
    env: {
      ...process.env,
      DEMO_REGISTRY: registryUrl,
      DEMO_TOKEN: token,
      DEMO_SERVICE: SERVICE,
      DEMO_INSTANCE: id,
      DEMO_ZONE: zone,
      DEMO_STDIN_IS_PARENT: '1',
    },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    for (const stream of [child.stdout!, child.stderr!])
      createInterface({ input: stream }).on('line', (line) => {
        say(`[${id}] ${line}`);
        if (line.startsWith('serving on')) resolve(child);
      });
    child.once('exit', (code) => reject(new Error(`instance ${id} exited (${code}) before registering`)));
  });
}

/** One request every INTERVAL_MS, each printed: who served it, and its trace. */
function trickle(url: string): { stop(): Promise<void> } {
  let n = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      n++;
      const path = `/${SERVICE}/${n}`;
      try {
        const res = await fetch(`${url}${path}`, { signal: AbortSignal.timeout(5000) });
        const text = await res.text();
        if (res.ok) {
          const body = JSON.parse(text) as { instance: string; zone: string; traceId: string | null };
          say(`GET ${path} → ${res.status} from ${body.instance} (${body.zone}), trace ${body.traceId}`);
        } else say(`GET ${path} → ${res.status} ${res.headers.get('x-peregrine-reason') ?? ''}`);
      } catch (err) {
        say(`GET ${path} failed: ${(err as Error).message}`);
      }
      await sleep(INTERVAL_MS);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
    },
  };
}

async function main(): Promise<void> {
  const redisBin = process.env.REDIS_SERVER_BIN ?? 'redis-server';
  if (redisServerInstalled(redisBin))
    redis = await startLocalRedis(dir, redisBin, (child) => children.push(child));
  const configFile = join(dir, 'gateway.yaml');
  writeFileSync(configFile, stringify(gatewayConfig()));
  const { child: gateway, addresses } = await startGateway(configFile);
  const registryUrl = `http://${addresses.registry}`;
  const instances = await Promise.all(INSTANCES.map((i) => startInstance(registryUrl, i.id, i.zone)));

  writeFileSync(join(dir, 'registry-token'), `${token}\n`, { mode: 0o600 });
  const edge = `http://${addresses.edge}`;
  const admin = `http://${addresses.admin}`;
  say('');
  say(`Peregrine demo (files in ${dir})`);
  say(
    redis
      ? `  registry store   Redis: a local redis-server at ${redis.url}`
      : `  registry store   in memory (${redisBin} not found: install redis-server for the Redis store)`,
  );
  say(`  gateway          ${edge}/            e.g. curl ${edge}/${SERVICE}`);
  say(`  metrics          ${admin}/metrics     (peregrine_discovery_*, peregrine_registry_*, RED per route)`);
  say(`  upstreams        ${admin}/v1/upstreams   (the registered instances as endpoints)`);
  say(`  registry         ${registryUrl}/v1/services   (token in ${join(dir, 'registry-token')})`);
  say(
    `                   curl -H "authorization: Bearer $(cat ${join(dir, 'registry-token')})" ${registryUrl}/v1/services`,
  );
  say(`  logs and traces  ${join(dir, 'gateway.log')}`);
  say('Ctrl-C stops everything: the instances drain and deregister, then the gateway and the registry stop.');
  say('');

  const traffic = trickle(edge);
  const stop = async (signal: NodeJS.Signals): Promise<void> => {
    onSignal = (again) => {
      say(`${again} again: killing everything`);
      process.exit(130);
    };
    say(`\n${signal}: stopping`);
    await traffic.stop();
    // The instances drain and deregister through the registry while the gateway still runs.
    const clean = await Promise.all(instances.map((c) => stopChild(c, 'SIGINT', 15_000)));
    clean.push(await stopChild(gateway, 'SIGTERM', 15_000));
    await redis?.stop();
    say(clean.every(Boolean) ? 'demo stopped cleanly' : 'demo stopped (something had to be killed)');
    process.exit(clean.every(Boolean) ? 0 : 1);
  };
  onSignal = (signal) => void stop(signal);
}

main().catch((err: unknown) => {
  say(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
