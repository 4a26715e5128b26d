/**
 * The six things the bench loads, each started fresh in its own process(es) for each measurement
 * and stopped after it. The upstream and the OTLP sink are shared and outlive the targets.
 */
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { nginxConf } from '../peers/nginx-conf.ts';
import { UPSTREAM_BODY } from '../peers/upstream.ts';
import { type PeregrineProfile, peregrineConfigYaml } from './peregrine-config.ts';
import { freePort, httpGet, type Managed, spawnManaged, waitForHttp } from './proc.ts';

export type TargetId =
  | 'direct'
  | 'bare-undici'
  | 'express-hpm'
  | 'nginx'
  | 'peregrine-passthrough'
  | 'peregrine-observed';

export interface BenchContext {
  /** The Node binary for every Node process (the one running the bench: Node 24). */
  node: string;
  /** Repository root (bench peers are started from here). */
  root: string;
  /** Directory holding the Peregrine to measure (its src/main.ts); the repository root by default. */
  peregrineDir: string;
  /** Scratch directory for generated configs and logs, removed at the end. */
  tmpDir: string;
  upstream: { origin: string; proc: Managed };
  /** OTLP/HTTP base endpoint of the sink (`/v1/traces` is appended by the exporter). */
  otlp: { endpoint: string; proc: Managed };
  nginxPath: string | undefined;
}

export interface RunningTarget {
  url: string;
  /** Root of the process tree whose RSS is sampled. */
  pid: number;
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

/** The target answers like the upstream does: proof that it really proxies. */
async function ready(url: string, proc: Managed): Promise<void> {
  const res = await waitForHttp(url, { proc });
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

function peregrine(profile: PeregrineProfile): Target {
  const id: TargetId = profile === 'passthrough' ? 'peregrine-passthrough' : 'peregrine-observed';
  return {
    id,
    label:
      profile === 'passthrough'
        ? 'Peregrine passthrough (no access log, no tracing export, metrics on)'
        : 'Peregrine observed (access log, OTLP traces at 10%, metrics on)',
    async start(ctx) {
      const n = ++seq;
      const [listenPort, adminPort] = [await freePort(), await freePort()];
      const configFile = join(ctx.tmpDir, `peregrine-${profile}-${n}.yaml`);
      writeFileSync(
        configFile,
        peregrineConfigYaml({
          profile,
          listenPort,
          adminPort,
          upstreamOrigin: ctx.upstream.origin,
          otlpEndpoint: ctx.otlp.endpoint,
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
          [join(ctx.peregrineDir, 'src/main.ts'), 'run', '--config', configFile],
          {
            env: childEnv(),
            cwd: ctx.peregrineDir,
            stdout: logFd,
          },
        );
      } finally {
        closeSync(logFd);
      }
      const url = `http://127.0.0.1:${listenPort}/`;
      try {
        await waitForHttp(`http://127.0.0.1:${adminPort}/readyz`, { proc });
        await ready(url, proc);
      } catch (err) {
        await proc.stop(5000);
        throw new Error(`${(err as Error).message}\nlog:\n${readFileSync(logFile, 'utf8').slice(-4000)}`);
      }
      return {
        url,
        pid: proc.pid,
        // SIGTERM: drain (1 s), flush spans, exit.
        stop: async () => void (await proc.stop(8000)),
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
    [join(peregrineDir, 'src/main.ts'), 'validate', config],
    {
      env: childEnv(),
      cwd: peregrineDir,
    },
  );
  const exit = await proc.exited;
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
  peregrine('observed'),
];
