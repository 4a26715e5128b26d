/**
 * The things the bench loads, each started fresh in its own process(es) for each measurement
 * and stopped after it. The upstream and the OTLP sink are shared and outlive the targets.
 */
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { nginxConf } from '../peers/nginx-conf.ts';
import { UPSTREAM_BODY } from '../peers/upstream.ts';
import type { BenchJwt, BenchTls } from './credentials.ts';
import { peregrineArgv, peregrineEnv } from './launcher.ts';
import { type PeregrineProfile, peregrineConfigYaml } from './peregrine-config.ts';
import type { PinPlan } from './pin.ts';
import { freePort, type GetOptions, httpGet, type Managed, spawnManaged, waitForHttp } from './proc.ts';
import { redisServerPath, startBenchRedis } from './redis.ts';
import { registerBenchUpstream } from './registry-api.ts';
import { benchRegistryToken, REGISTRY_TOKEN_ENV } from './registry-config.ts';

export type TargetId =
  | 'direct'
  | 'bare-undici'
  | 'express-hpm'
  | 'nginx'
  | 'peregrine-passthrough'
  | 'peregrine-lean'
  | 'peregrine-jwt'
  | 'peregrine-https'
  | 'peregrine-observed'
  | 'peregrine-ratelimit'
  | 'peregrine-ratelimit-redis'
  | 'peregrine-registry';

export interface BenchContext {
  /** The Node binary for every Node process (the one running the bench: Node 24). */
  node: string;
  /** Repository root (bench peers are started from here). */
  root: string;
  /** Directory holding the Peregrine to measure (its bin/peregrine.js and src/); the repository root by default. */
  peregrineDir: string;
  /** Scratch directory for generated configs and logs, removed at the end. */
  tmpDir: string;
  upstream: { origin: string; proc: Managed };
  /** OTLP/HTTP base endpoint of the sink (`/v1/traces` is appended by the exporter). */
  otlp: { endpoint: string; proc: Managed };
  nginxPath: string | undefined;
  /** BENCH_PIN=1: the CPUs of the target and of the rest (bench/lib/pin.ts). */
  pin?: PinPlan | undefined;
  /** The ES256 token (and its public JWK) minted at start, for peregrine-jwt. */
  jwt: BenchJwt;
  /** The self-signed certificate made at start, for peregrine-https; or why there is none. */
  tls: BenchTls | { error: string };
}

export interface RunningTarget {
  url: string;
  /** Root of the process tree whose RSS is sampled. */
  pid: number;
  /** Processes the target brought along (its Redis): the bench's, not "other processes". */
  companions?: readonly number[];
  /** Headers the load generator sends with every request (e.g. the bench JWT). */
  headers?: Readonly<Record<string, string>>;
  /** https: the certificate the bench trusts for this target. */
  ca?: string;
  stop(): Promise<void>;
  /** Facts read after stop, for the report (e.g. spans the sink received). */
  after?(): Promise<Record<string, number>>;
}

export interface Target {
  id: TargetId;
  label: string;
  /** Why it cannot run here, if it cannot. */
  skipReason?(ctx: BenchContext): string | undefined;
  start(ctx: BenchContext): Promise<RunningTarget>;
}

/** Environment for child processes: no inherited OTEL_* overrides, production mode for all. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('OTEL_')) env[k] = v;
  return { ...env, NODE_ENV: 'production', ...extra };
}

/**
 * The Peregrine in `dir` on two free ports, with the config `yaml` writes for them (to
 * `configFile`); resolves once its admin /readyz answers. For the tools that start gateways of
 * their own (profile, side-by-side, the registry and rate-limit benches); the bench's targets keep
 * their log. stdout is discarded unless `stdout: 'pipe'` keeps its tail for error messages (for
 * configs that log little).
 */
export async function startPeregrine(opts: {
  name: string;
  dir: string;
  configFile: string;
  yaml: (listenPort: number, adminPort: number) => string;
  nodeArgs?: readonly string[];
  /** Extra environment (e.g. the registry token). */
  env?: Record<string, string>;
  stdout?: 'ignore' | 'pipe';
  /** Run Node under another program (`valgrind --tool=callgrind …`): `<command> <args…> <node> …`. */
  wrap?: { command: string; args: readonly string[] };
  /** How long to wait for /readyz (default 15 s; a gateway under valgrind needs far longer). */
  readyTimeoutMs?: number;
}): Promise<{ proc: Managed; url: string; admin: string }> {
  const [listenPort, adminPort] = [await freePort(), await freePort()];
  writeFileSync(opts.configFile, opts.yaml(listenPort, adminPort));
  const node = [...(opts.nodeArgs ?? []), ...peregrineArgv(opts.dir), 'run', '--config', opts.configFile];
  const proc = spawnManaged(
    opts.name,
    opts.wrap?.command ?? process.execPath,
    opts.wrap ? [...opts.wrap.args, process.execPath, ...node] : node,
    { env: peregrineEnv(opts.dir, childEnv(opts.env)), cwd: opts.dir, stdout: opts.stdout ?? 'ignore' },
  );
  const admin = `http://127.0.0.1:${adminPort}`;
  await waitForHttp(`${admin}/readyz`, { proc, timeoutMs: opts.readyTimeoutMs });
  return { proc, url: `http://127.0.0.1:${listenPort}/`, admin };
}

/** Start one of bench/peers/*.ts with PORT (and UPSTREAM) set. */
export async function startPeer(
  ctx: Pick<BenchContext, 'node' | 'root'>,
  file: string,
  env: Record<string, string> = {},
  nodeArgs: readonly string[] = [],
): Promise<{ proc: Managed; port: number; origin: string }> {
  const port = await freePort();
  const proc = spawnManaged(file, ctx.node, [...nodeArgs, join(ctx.root, 'bench/peers', file)], {
    env: childEnv({ PORT: String(port), ...env }),
    ipc: true,
  });
  return { proc, port, origin: `http://127.0.0.1:${port}` };
}

/** The bench upstream and, when `sink` (the observed profile's export), the OTLP sink; both answering. */
export async function startUpstreamAndSink(
  ctx: Pick<BenchContext, 'node' | 'root'>,
  sink: boolean,
): Promise<{ upstream: string; otlp: string | undefined }> {
  const peer = await startPeer(ctx, 'upstream.ts');
  await waitForHttp(`${peer.origin}/`, { proc: peer.proc });
  if (!sink) return { upstream: peer.origin, otlp: undefined };
  const otlp = await startPeer(ctx, 'otlp-sink.ts');
  await waitForHttp(`${otlp.origin}/stats`, { proc: otlp.proc });
  return { upstream: peer.origin, otlp: otlp.origin };
}

/** The target answers like the upstream does: proof that it really proxies. */
async function ready(url: string, proc: Managed, opts: GetOptions = {}): Promise<void> {
  const res = await waitForHttp(url, { proc, ...opts });
  if (res.body !== UPSTREAM_BODY.toString()) {
    throw new Error(
      `${proc.name}: ${url} answered 200 but not with the upstream's body: ${res.body.slice(0, 200)}`,
    );
  }
}

function nodePeer(id: TargetId, label: string, file: string): Target {
  return {
    id,
    label,
    async start(ctx) {
      const { proc, origin } = await startPeer(ctx, file, { UPSTREAM: ctx.upstream.origin });
      const url = `${origin}/`;
      try {
        await ready(url, proc);
      } catch (err) {
        await proc.stop();
        throw err;
      }
      return { url, pid: proc.pid, stop: async () => void (await proc.stop()) };
    },
  };
}

let seq = 0;

const PEREGRINE_LABELS: Record<PeregrineProfile, string> = {
  passthrough: 'Peregrine passthrough (no access log, no tracing export, metrics on, resilience defaults on)',
  lean: 'Peregrine lean: passthrough with the resilience layer off (round robin, 1 attempt, no breaker, no outlier detection)',
  jwt: 'Peregrine JWT: passthrough, route requires an ES256 JWT (inline JWKS, issuer and audience checked; one token reused)',
  https: 'Peregrine HTTPS: passthrough on a TLS listener (self-signed P-256 cert, HTTP/1.1 keep-alive)',
  observed: 'Peregrine observed (access log, OTLP traces at 10%, metrics on)',
  ratelimit:
    'Peregrine rate limit: passthrough, route with a rate limit policy (memory counters, by client address) the load never reaches',
  'ratelimit-redis':
    'Peregrine rate limit on Redis: the same policy with its counters in a local redis-server (one key, INCRBY per request)',
  registry:
    "Peregrine registry: passthrough whose upstream's endpoint is registered through the registration API (memory store), not listed in the config",
};

function peregrine(profile: PeregrineProfile): Target {
  const id = `peregrine-${profile}` as TargetId;
  return {
    id,
    label: PEREGRINE_LABELS[profile],
    skipReason:
      profile === 'https'
        ? (ctx) => ('error' in ctx.tls ? `skipped: no certificate (${ctx.tls.error})` : undefined)
        : profile === 'ratelimit-redis'
          ? () => (redisServerPath() === undefined ? 'skipped: no redis-server' : undefined)
          : undefined,
    async start(ctx) {
      const n = ++seq;
      const [listenPort, adminPort] = [await freePort(), await freePort()];
      const configFile = join(ctx.tmpDir, `peregrine-${profile}-${n}.yaml`);
      const tls = profile === 'https' && !('error' in ctx.tls) ? ctx.tls : undefined;
      const redis = profile === 'ratelimit-redis' ? await startBenchRedis(`redis-${n}`) : undefined;
      const registryPort = profile === 'registry' ? await freePort() : undefined;
      writeFileSync(
        configFile,
        peregrineConfigYaml({
          profile,
          listenPort,
          adminPort,
          upstreamOrigin: ctx.upstream.origin,
          otlpEndpoint: ctx.otlp.endpoint,
          jwt: profile === 'jwt' ? ctx.jwt : undefined,
          tls: tls ? { certFile: tls.certFile, keyFile: tls.keyFile } : undefined,
          redisUrl: redis?.url,
          registryPort,
        }),
      );
      // stdout (access log and info lines) goes to a file, as it would in production.
      const logFile = join(ctx.tmpDir, `peregrine-${profile}-${n}.log`);
      const logFd = openSync(logFile, 'w');
      const sinkBefore = await sinkStats(ctx);
      let proc: Managed;
      try {
        proc = spawnManaged(
          `peregrine-${profile}`,
          ctx.node,
          [...peregrineArgv(ctx.peregrineDir), 'run', '--config', configFile],
          {
            env: peregrineEnv(
              ctx.peregrineDir,
              childEnv(registryPort ? { [REGISTRY_TOKEN_ENV]: benchRegistryToken() } : {}),
            ),
            cwd: ctx.peregrineDir,
            stdout: logFd,
          },
        );
      } finally {
        closeSync(logFd);
      }
      const url = `${tls ? 'https' : 'http'}://127.0.0.1:${listenPort}/`;
      const headers = profile === 'jwt' ? { authorization: `Bearer ${ctx.jwt.token}` } : undefined;
      // The bench's probe trusts its own certificate explicitly (verification stays on).
      const ca = tls?.certPem;
      let registration: Awaited<ReturnType<typeof registerBenchUpstream>> | undefined;
      try {
        await waitForHttp(`http://127.0.0.1:${adminPort}/readyz`, { proc });
        if (registryPort)
          registration = await registerBenchUpstream(`http://127.0.0.1:${registryPort}`, ctx.upstream.origin);
        await ready(url, proc, { headers, ca });
        if (headers) await refusesWithoutToken(url, proc.name);
      } catch (err) {
        await registration?.close();
        await proc.stop(5000);
        await redis?.proc.stop(2000);
        throw new Error(`${(err as Error).message}\nlog:\n${readFileSync(logFile, 'utf8').slice(-4000)}`);
      }
      return {
        url,
        pid: proc.pid,
        ...(redis ? { companions: [redis.proc.pid] } : {}),
        headers,
        ca,
        // SIGTERM: drain (1 s), flush spans, exit.
        stop: async () => {
          await registration?.close();
          await proc.stop(8000);
          await redis?.proc.stop(2000);
        },
        async after() {
          const log = readFileSync(logFile);
          let accessLines = 0;
          const needle = Buffer.from('"type":"access"');
          for (let i = log.indexOf(needle); i !== -1; i = log.indexOf(needle, i + needle.length))
            accessLines++;
          const sink = await sinkStats(ctx);
          return {
            accessLogLines: accessLines,
            otlpExports: sink.requests - sinkBefore.requests,
            otlpSpans: sink.jsonSpans - sinkBefore.jsonSpans,
            otlpBytes: sink.bytes - sinkBefore.bytes,
          };
        },
      };
    },
  };
}

/** A route that requires a token must answer 401 without one (else the bench measures no auth). */
async function refusesWithoutToken(url: string, name: string): Promise<void> {
  const res = await httpGet(url, 2000);
  if (res.status !== 401) {
    throw new Error(
      `${name}: ${url} without a token answered ${res.status}, not 401: ${res.body.slice(0, 200)}`,
    );
  }
  const bad = await httpGet(url, 2000, { headers: { authorization: 'Bearer not.a.token' } });
  if (bad.status !== 401) {
    throw new Error(`${name}: ${url} with a malformed token answered ${bad.status}, not 401`);
  }
}

async function sinkStats(ctx: BenchContext): Promise<{ requests: number; bytes: number; jsonSpans: number }> {
  const res = await httpGet(`${ctx.otlp.endpoint}/stats`);
  return JSON.parse(res.body) as { requests: number; bytes: number; jsonSpans: number };
}

const nginx: Target = {
  id: 'nginx',
  label: 'nginx proxy_pass (upstream keepalive, 1 worker)',
  skipReason: (ctx) => (ctx.nginxPath ? undefined : 'skipped: nginx not installed'),
  async start(ctx) {
    const n = ++seq;
    const dir = join(ctx.tmpDir, `nginx-${n}`);
    mkdirSync(dir, { recursive: true });
    const port = await freePort();
    const upstreamPort = Number(new URL(ctx.upstream.origin).port);
    const conf = join(dir, 'nginx.conf');
    writeFileSync(conf, nginxConf({ dir, listenPort: port, upstreamPort }));
    // -e: the error log from the first moment (before the config is read), not /var/log/nginx.
    const proc = spawnManaged('nginx', ctx.nginxPath!, [
      '-c',
      conf,
      '-p',
      `${dir}/`,
      '-e',
      join(dir, 'error.log'),
    ]);
    const url = `http://127.0.0.1:${port}/`;
    try {
      await ready(url, proc);
    } catch (err) {
      await proc.stop();
      let log = '';
      try {
        log = readFileSync(join(dir, 'error.log'), 'utf8').slice(-4000);
      } catch {
        // no log written
      }
      throw new Error(`${(err as Error).message}\nerror.log:\n${log}`);
    }
    return { url, pid: proc.pid, stop: async () => void (await proc.stop()) };
  },
};

/** Fail early, with its own words, when the Peregrine under test does not even load a config. */
export async function peregrinePreflight(node: string, peregrineDir: string, tmpDir: string): Promise<void> {
  const config = join(tmpDir, 'preflight.yaml');
  writeFileSync(
    config,
    peregrineConfigYaml({
      profile: 'passthrough',
      listenPort: 1,
      adminPort: 2,
      upstreamOrigin: 'http://127.0.0.1:3',
    }),
  );
  const proc = spawnManaged(
    'peregrine validate',
    node,
    [...peregrineArgv(peregrineDir), 'validate', config],
    {
      env: peregrineEnv(peregrineDir, childEnv()),
      cwd: peregrineDir,
    },
  );
  const exit = await proc.closed;
  if (exit.code !== 0) throw new Error(`Peregrine in ${peregrineDir} does not run:\n${proc.output()}`);
}

export const TARGETS: readonly Target[] = [
  {
    id: 'direct',
    label: 'direct upstream (node:http, no proxy)',
    async start(ctx) {
      const url = `${ctx.upstream.origin}/`;
      await ready(url, ctx.upstream.proc);
      // The upstream is shared and keeps running; nothing to stop.
      return { url, pid: ctx.upstream.proc.pid, stop: async () => {} };
    },
  },
  nodePeer('bare-undici', 'bare undici forwarder (node:http + undici Pool.stream)', 'bare-undici.ts'),
  nodePeer('express-hpm', 'express 5 + http-proxy-middleware 4', 'express-hpm.ts'),
  nginx,
  peregrine('passthrough'),
  peregrine('lean'),
  peregrine('jwt'),
  peregrine('https'),
  peregrine('observed'),
  peregrine('ratelimit'),
  peregrine('ratelimit-redis'),
  peregrine('registry'),
];
