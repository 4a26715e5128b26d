/**
 * The deployment files against the code, without Kubernetes or Docker (docs/deployment.md):
 * deployment/kubernetes/ and deployment/compose/.
 *
 * Every YAML file parses. Each embedded Peregrine config passes the real `peregrine validate`,
 * run in a temporary directory laid out as the container sees it: the ConfigMaps, bind mounts and
 * volumes it mounts, certificates issued by `peregrine certs` (compose: by its own mesh-certs.sh)
 * where Secrets or volumes hold them, and the environment the manifest gives the container. From
 * the loaded configs: the container ports, probe paths and ports, Service targetPorts, monitor
 * ports, NetworkPolicy ports, published ports and Prometheus targets are the ones the processes
 * really serve; the container commands are arguments of the image's ENTRYPOINT; every variable a
 * manifest sets is one the code or the config reads. Prometheus configs pass `promtool check
 * config` with the rule files mounted as the container sees them; the Grafana provisioning names
 * dashboards that exist and a trace datasource for the exemplars.
 *
 * Security as shipped: a real redis-server, started with each manifest's own arguments (and its
 * generated config file), refuses a client that does not AUTH and accepts the credentials every
 * Peregrine config that uses Redis reads with its container's environment (Secret stand-ins are per
 * Secret key, so two manifests reading different Secrets disagree); Redis's probes pass with their
 * credentials; no admin API listens beyond loopback without a token or client certificates;
 * Prometheus sends each process's token; Compose publishes nothing beyond the host's loopback.
 */
import { spawnSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { loadConfigFile } from '../../src/config/loader.ts';
import type { Config } from '../../src/config/schema.ts';
import { readTokenRef } from '../../src/config/secret-ref.ts';
import { splitAddress } from '../../src/dataplane/listener/listener.ts';
import { isLoopbackHost } from '../../src/sidecar/schema.ts';
import { readRedisConnectOptions } from '../../src/stores/redis-connect-options.ts';
import { DASHBOARD_DIR } from '../helpers/dashboards.ts';
import { readDockerfile } from '../helpers/dockerfile.ts';
import { send, startRedis, type TestRedis } from '../helpers/redis.ts';
import { findTool, PROMTOOL, REDIS_CLI } from '../helpers/tools.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const K8S = join(ROOT, 'deployment/kubernetes');
const COMPOSE = join(ROOT, 'deployment/compose');
const PEREGRINE = join(ROOT, 'bin/peregrine.js');
const IMAGE = readDockerfile(join(ROOT, 'Dockerfile'));

const work = mkdtempSync(join(tmpdir(), 'peregrine-deployment-'));
const redises: TestRedis[] = [];
afterAll(async () => {
  for (const r of redises.splice(0)) await r.close();
  rmSync(work, { recursive: true, force: true });
});
let dirs = 0;
const freshDir = (name: string) => {
  const d = join(work, `${++dirs}-${name}`);
  mkdirSync(d, { recursive: true });
  return d;
};

// biome-ignore lint/suspicious/noExplicitAny: manifests are untyped YAML, checked as they are read
type Obj = Record<string, any>;

/** Every document of a YAML file (anchors and merge keys resolved, as Compose does); fails on any error. */
function yamlDocs(file: string): Obj[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'), { merge: true });
  const list = Array.isArray(docs) ? docs : [docs];
  const errors = list.flatMap((d) => d.errors.map((e) => `${relative(ROOT, file)}: ${e.message}`));
  expect(errors).toEqual([]);
  return list.map((d) => d.toJS({ maxAliasCount: -1 }) as Obj).filter((d) => d !== null);
}

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => /\.ya?ml$/.test(f))
    .map((f) => join(dir, f))
    .sort();
}

/** The environment a command of the image runs with here: this Node first on PATH. */
function cliEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: `${dirname(process.execPath)}:/usr/bin:/bin`, HOME: tmpdir(), ...extra };
}

function peregrine(args: string[], env: Record<string, string> = {}, cwd = ROOT) {
  return spawnSync(PEREGRINE, args, { cwd, env: cliEnv(env), encoding: 'utf8' });
}

/** `peregrine validate`, and the config as the gateway loads it with that environment. */
async function validated(file: string, env: Record<string, string>): Promise<Config> {
  const run = peregrine(['validate', file], env);
  expect(run.status, `peregrine validate ${file}\n${run.stderr}`).toBe(0);
  return loadConfigFile(file, env);
}

/** The ports a Peregrine process serves with this config, by what they are. */
function servedPorts(config: Config): { data: number[]; registry?: number; admin: number; all: number[] } {
  const data = config.listeners
    .filter((l) => !['127.0.0.1', '::1', 'localhost'].includes(splitAddress(l.address).host))
    .map((l) => splitAddress(l.address).port);
  const registry = config.registry?.listener
    ? splitAddress(config.registry.listener.address).port
    : undefined;
  const admin = splitAddress(config.admin.address).port;
  return { data, registry, admin, all: [...data, ...(registry === undefined ? [] : [registry]), admin] };
}

/** Rewrites the absolute paths under each mount point of a container to where the test put them. */
function remap(text: string, mounts: readonly { target: string; host: string }[]): string {
  const targets = [...mounts].sort((a, b) => b.target.length - a.target.length);
  const escaped = targets.map((m) => m.target.replace(/\/$/, '').replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  // One pass, so a rewritten path is never rewritten again (a mount at /tmp, say). A path ends at
  // a `/`, a space, a quote or the end of the text (`--dir /data` in a script).
  const re = new RegExp(`(?<![\\w/.-])(${escaped.join('|')})(?=[/\\s"']|$)`, 'gm');
  return text.replace(
    re,
    (_, target: string) => targets.find((m) => m.target.replace(/\/$/, '') === target)!.host,
  );
}

const SOURCES = [
  ...readdirSync(join(ROOT, 'src'), { recursive: true, encoding: 'utf8' }).map((f) => join(ROOT, 'src', f)),
  join(ROOT, 'bin/peregrine.js'),
]
  .filter((f) => /\.(ts|js)$/.test(f))
  .map((f) => readFileSync(f, 'utf8'))
  .join('\n');
const DEMO_SOURCES = ['app.ts', 'instrument.ts']
  .map((f) => readFileSync(join(ROOT, 'examples/mesh', f), 'utf8'))
  .join('\n');
/** Read by Node itself (its built-in proxy support: NODE_USE_ENV_PROXY turns it on). */
const NODE_READS = new Set(['NODE_USE_ENV_PROXY', 'HTTP_PROXY', 'NO_PROXY']);
/** The OpenTelemetry JS SDK's packages, which read the OTEL_* variables of the demo apps. */
const OTEL_SOURCES = ['sdk-node', 'exporter-trace-otlp-http', 'otlp-exporter-base', 'core', 'resources']
  .flatMap((p) => {
    const dir = join(ROOT, 'node_modules/@opentelemetry', p, 'build/src');
    return existsSync(dir)
      ? readdirSync(dir, { recursive: true, encoding: 'utf8' })
          .filter((f) => f.endsWith('.js'))
          .map((f) => readFileSync(join(dir, f), 'utf8'))
      : [];
  })
  .join('\n');

/** Variables that nothing reads: for a Peregrine process, neither its config nor the code. */
function unreadPeregrineEnv(names: readonly string[], configText: string, siblings: string): string[] {
  return names.filter(
    (n) =>
      !configText.includes(`\${${n}`) &&
      !new RegExp(`env: ${n}\\b`).test(configText) &&
      !siblings.includes(`$(${n})`) &&
      !new RegExp(`\\b${n}\\b`).test(SOURCES),
  );
}

/** For a demo app: the app, Node, or the OpenTelemetry SDK. */
function unreadAppEnv(names: readonly string[]): string[] {
  return names.filter(
    (n) => !DEMO_SOURCES.includes(`process.env.${n}`) && !NODE_READS.has(n) && !OTEL_SOURCES.includes(n),
  );
}

/** A rate limit counted in Redis, shared by the replicas. */
const redisRateLimit = (config: Config) =>
  Object.values(config.policies).some(
    (p) => p.kind === 'rate_limit' && (p as { store?: { type?: string } }).store?.type === 'redis',
  );

/**
 * What a Peregrine process AUTHs to Redis with, read with its environment the way the gateway
 * reads it: `redis.password` (and `username`), or credentials in the URL. Undefined: none.
 */
function redisAuthOf(config: Config, env: NodeJS.ProcessEnv): string[] | undefined {
  const redis = config.redis!;
  if (redis.password !== undefined) {
    const c = readRedisConnectOptions(redis, env);
    return c.username === undefined ? [c.password!] : [c.username, c.password!];
  }
  const url = new URL(redis.url);
  if (url.password === '') return undefined;
  const password = decodeURIComponent(url.password);
  return url.username === '' ? [password] : [decodeURIComponent(url.username), password];
}

/**
 * The admin API is reachable beyond loopback with no credential: neither a token nor client
 * certificates (the gateway only warns about it at start).
 */
function adminOpen(config: Config): boolean {
  const { address, auth, tls } = config.admin;
  const certificates = tls?.clientAuth !== undefined && tls.clientAuth !== 'none';
  return !isLoopbackHost(splitAddress(address).host) && auth.token === undefined && !certificates;
}

/**
 * A Redis started as a manifest starts it (its command line, run as it is: a shell script, or
 * `redis-server` with its arguments and configuration file), with the container's environment only,
 * on a loopback port of the test's: refused without AUTH (the server must require it), answered with
 * the credentials the Peregrine process reads. Those credentials are in none of the arguments
 * redis-server was given (Redis overwrites its process title once up, so they are read as given,
 * not from /proc) nor in its environment, and the process started is Redis itself (`exec`: the
 * SIGTERM of a stopping container reaches it).
 */
async function expectRedisRequiresAuth(
  argv: readonly string[],
  env: Record<string, string>,
  peregrineAuth: readonly string[] | undefined,
): Promise<TestRedis> {
  const redis = await startRedis({ launch: { argv, env } });
  redises.push(redis);
  expect(await send(redis.port, ['PING']), 'Redis answers a client that did not AUTH').toMatch(/^-NOAUTH/);
  expect(peregrineAuth, 'the Peregrine config that talks to Redis has credentials').toBeDefined();
  expect(await send(redis.port, ['PING'], 2000, peregrineAuth)).toBe('+PONG\r\n');
  const password = peregrineAuth!.at(-1)!;
  const given = redis.launchedArgs();
  expect(given.length, 'redis-server was run').toBeGreaterThan(0);
  expect(given.join(' '), "Redis's arguments (ps, the container runtime's spec)").not.toContain(password);
  expect(readFileSync(`/proc/${redis.pid}/environ`, 'utf8'), "Redis's environment").not.toContain(password);
  expect(readFileSync(`/proc/${redis.pid}/comm`, 'utf8').trim(), 'the process started is Redis').toBe(
    'redis-server',
  );
  return redis;
}

/**
 * A Redis probe or health check as its container runs it (redis-cli reads the password from
 * REDISCLI_AUTH), against `redis`: `-p <port>` added after each `redis-cli`. Its exit status and output.
 */
function runRedisCheck(shellCommand: string, redis: TestRedis, env: Record<string, string>) {
  const cli = findTool(REDIS_CLI, 'the deployment manifests test');
  const script = shellCommand.replace(/(^|[\s|;&])redis-cli\b/g, `$1'${cli.path}' -p ${redis.port}`);
  return spawnSync('/bin/sh', ['-c', script], { env: { ...cli.env, ...env }, encoding: 'utf8' });
}

/** An exec probe's command as a shell line: its script when it is `sh -c <script>`, else its words. */
const probeScript = (command: readonly string[]): string =>
  /^(\/bin\/)?sh$/.test(command[0]!) && command[1] === '-c' ? command[2]! : command.join(' ');

/**
 * The kubelet's expansion of a container's command and arguments: `$(VAR)` of a variable the
 * container has becomes its value, `$$` a `$`, anything else stays as written.
 */
const kubeletExpand = (text: string, env: Record<string, string>): string =>
  text.replace(/\$\$|\$\(([^)]*)\)/g, (m, name: string | undefined) =>
    m === '$$' ? '$' : name !== undefined && name in env ? env[name]! : m,
  );

const secondsOf = (ms: number) => ms / 1000;
const sleepOf = (container: Obj): number => {
  const cmd = container.lifecycle?.preStop?.exec?.command as string[] | undefined;
  const s = container.lifecycle?.preStop?.sleep?.seconds as number | undefined;
  return s ?? (cmd?.[0] === 'sleep' ? Number(cmd[1]) : 0);
};

// ---------------------------------------------------------------------------------------------
// Kubernetes

const k8sFiles = yamlFiles(K8S);
const k8s = k8sFiles.flatMap((f) => yamlDocs(f).map((doc) => ({ file: f, doc })));
const objects = k8s.map((o) => o.doc).filter((d) => typeof d.kind === 'string' && d.kind !== 'Kustomization');
const ofKind = (kind: string) => objects.filter((o) => o.kind === kind);
const named = (kind: string, name: string) => {
  const o = ofKind(kind).find((x) => x.metadata.name === name);
  expect(o, `${kind} ${name}`).toBeDefined();
  return o!;
};
const kustomization = yamlDocs(join(K8S, 'kustomization.yaml'))[0]!;
const NAMESPACE = kustomization.namespace as string;
const workloads = ofKind('Deployment');
const matches = (selector: Obj | undefined, labels: Obj) =>
  Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);
const podsSelectedBy = (selector: Obj) =>
  workloads.filter((w) => matches(selector, w.spec.template.metadata.labels));
const containersOf = (w: Obj): Obj[] => [
  ...(w.spec.template.spec.initContainers ?? []),
  ...w.spec.template.spec.containers,
];
const portOf = (containers: Obj[], port: string | number): number | undefined =>
  typeof port === 'number'
    ? port
    : containers.flatMap((c) => c.ports ?? []).find((p: Obj) => p.name === port)?.containerPort;

interface PeregrineContainer {
  readonly workload: Obj;
  readonly container: Obj;
  readonly env: Record<string, string>;
  readonly config: Config;
  readonly configText: string;
  readonly ports: ReturnType<typeof servedPorts>;
}

/** Issues the pod's X.509-SVID into `dir` the way docs/deployment.md says to fill the Secret. */
function issueInto(dir: string, serviceAccount: string, trustDomain: string): void {
  const ca = freshDir('ca');
  const init = peregrine(['certs', 'init', '--dir', ca, '--trust-domain', trustDomain]);
  expect(init.status, init.stderr).toBe(0);
  const issue = peregrine([
    'certs',
    'issue',
    '--dir',
    ca,
    '--service',
    serviceAccount,
    '--namespace',
    NAMESPACE,
    '--out',
    dir,
  ]);
  expect(issue.status, issue.stderr).toBe(0);
}

/** What the test puts in a Secret's key: the same for every container and volume that reads it. */
const secretStandIn = (name: string, key: string): string => `secret-${name}-${key}-0123456789abcdef`;

/**
 * The environment a container gets: its values (with `$(VAR)` expanded), a stand-in for each
 * Secret key (the same for every container that references the same key), the pod's fields.
 */
function containerEnv(container: Obj): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of container.env ?? []) {
    if (e.value !== undefined)
      env[e.name] = String(e.value).replace(/\$\((\w+)\)/g, (_, v: string) => env[v] ?? '');
    else if (e.valueFrom?.secretKeyRef) {
      const { name, key } = e.valueFrom.secretKeyRef;
      env[e.name] = secretStandIn(name, key);
    } else if (e.valueFrom?.fieldRef?.fieldPath === 'status.podIP') env[e.name] = '10.1.4.17';
    else env[e.name] = 'peregrine-7f9c-x2';
  }
  return env;
}

/** The container's file system (its mounts) and environment, then its config validated and loaded. */
async function loadK8sContainer(workload: Obj, container: Obj): Promise<PeregrineContainer> {
  const pod = workload.spec.template.spec;
  const root = freshDir(`${workload.metadata.name}-${container.name}`);
  const mounts: { target: string; host: string }[] = [];
  for (const m of container.volumeMounts ?? []) {
    const volume = pod.volumes.find((v: Obj) => v.name === m.name);
    expect(volume, `volume ${m.name}`).toBeDefined();
    const host = join(root, m.mountPath);
    mkdirSync(host, { recursive: true });
    mounts.push({ target: m.mountPath, host });
    if (volume.configMap) {
      for (const [key, text] of Object.entries(named('ConfigMap', volume.configMap.name).data as Obj))
        writeFileSync(join(host, key), text as string);
    } else if (volume.secret) {
      // A TLS Secret: the SVID of the pod's service account, in the trust domain of its config.
      const configs = Object.values(
        ofKind('ConfigMap').flatMap((c) => Object.values(c.data as Obj)) as string[],
      ).join('\n');
      const td = /spiffe:\/\/([^/\s]+)\//.exec(configs)?.[1] ?? 'cluster.local';
      issueInto(host, pod.serviceAccountName, td);
    }
  }
  const env = containerEnv(container);
  expect(container.command, 'the image ENTRYPOINT runs; the manifest gives its arguments').toBeUndefined();
  const args = container.args as string[];
  expect(args[0]).toBe(IMAGE.cmd![0]);
  const configPath = args[args.indexOf('--config') + 1]!;
  const configFile = join(root, configPath);
  expect(existsSync(configFile), `${configPath} is in a mounted ConfigMap`).toBe(true);
  const configText = readFileSync(configFile, 'utf8');
  writeFileSync(configFile, remap(configText, mounts));
  const config = await validated(configFile, env);
  const siblings = JSON.stringify(container.env ?? []);
  expect(unreadPeregrineEnv(Object.keys(env), configText, siblings)).toEqual([]);
  return { workload, container, env, config, configText, ports: servedPorts(config) };
}

const peregrineContainers: Promise<PeregrineContainer[]> = (async () => {
  const out: PeregrineContainer[] = [];
  for (const w of workloads)
    for (const c of containersOf(w)) if (c.image === 'peregrine') out.push(await loadK8sContainer(w, c));
  return out;
})();
// Failures surface in the tests that await it.
peregrineContainers.catch(() => undefined);

async function gateway(): Promise<PeregrineContainer> {
  const g = (await peregrineContainers).find((p) => p.config.mode === 'gateway');
  expect(g).toBeDefined();
  return g!;
}

describe('deployment/kubernetes', () => {
  it('parses, and each directory’s kustomization lists exactly its files', () => {
    expect(k8sFiles.length).toBeGreaterThan(5);
    for (const k of k8sFiles.filter((f) => basename(f) === 'kustomization.yaml')) {
      const doc = yamlDocs(k)[0]!;
      const dir = dirname(k);
      const listed = (doc.resources as string[]).map((r) => join(dir, r)).sort();
      const here = yamlFiles(dir).filter((f) => dirname(f) === dir && basename(f) !== 'kustomization.yaml');
      expect(listed).toEqual(here);
      for (const c of doc.components ?? []) expect(existsSync(join(dir, c, 'kustomization.yaml'))).toBe(true);
    }
    // The commented-out component exists and is one.
    expect(yamlDocs(join(K8S, 'monitoring/kustomization.yaml'))[0]!.kind).toBe('Component');
    expect(readFileSync(join(K8S, 'kustomization.yaml'), 'utf8')).toMatch(/#\s+- monitoring/);
  });

  it('writes no Secret: every secret is referenced, and docs/deployment.md says how to create it', () => {
    expect(ofKind('Secret')).toEqual([]);
    const text = JSON.stringify(objects);
    const referenced = new Set([
      ...[...text.matchAll(/"secretKeyRef":\{"name":"([^"]+)"/g)].map((m) => m[1]!),
      ...[...text.matchAll(/"secretName":"([^"]+)"/g)].map((m) => m[1]!),
      ...[...text.matchAll(/"credentials":\{"name":"([^"]+)"/g)].map((m) => m[1]!),
    ]);
    expect(referenced.size).toBeGreaterThan(3);
    const docs = readFileSync(join(ROOT, 'docs/deployment.md'), 'utf8');
    for (const s of referenced) expect(docs, `docs/deployment.md creates ${s}`).toContain(s);
  });

  it('every image is set by the kustomization or pinned to a tag', () => {
    const set = new Set((kustomization.images as Obj[]).map((i) => i.name));
    for (const w of workloads)
      for (const c of containersOf(w))
        expect(set.has(c.image) || /^[\w./-]+:[\w.-]+$/.test(c.image), `${c.name}: ${c.image}`).toBe(true);
    expect(readDockerfile(join(COMPOSE, 'demo-app.Dockerfile')).entrypoint).toBeDefined();
  });

  it('every container runs non-root, read-only, without capabilities', () => {
    for (const w of workloads) {
      const pod = w.spec.template.spec;
      expect(pod.securityContext.runAsNonRoot, w.metadata.name).toBe(true);
      expect(pod.automountServiceAccountToken, w.metadata.name).toBe(false);
      for (const c of containersOf(w)) {
        const sc = c.securityContext;
        expect(
          [sc.readOnlyRootFilesystem, sc.allowPrivilegeEscalation, sc.capabilities.drop],
          c.name,
        ).toEqual([true, false, ['ALL']]);
        expect(c.resources.requests.cpu, c.name).toBeDefined();
        expect(c.resources.limits.memory, c.name).toBeDefined();
      }
    }
  });

  it('each Peregrine config passes peregrine validate with the mounts and environment of its container', async () => {
    const modes = (await peregrineContainers).map((p) => p.config.mode).sort();
    expect(modes).toEqual(['gateway', 'sidecar']);
  });

  it('the gateway uses the Redis registry and rate limits, and Redis is the Service its URL names', async () => {
    const { config } = await gateway();
    expect(config.registry?.store).toBe('redis');
    expect(redisRateLimit(config)).toBe(true);
    const url = new URL(config.redis!.url);
    const service = named('Service', url.hostname);
    const port = service.spec.ports.find((p: Obj) => p.port === Number(url.port));
    expect(port).toBeDefined();
    expect(portOf(podsSelectedBy(service.spec.selector).flatMap(containersOf), port.targetPort)).toBe(6379);
  });

  it('Redis requires the password of its Secret, which stays out of its arguments; every Peregrine config that uses Redis authenticates with it', async () => {
    const users = (await peregrineContainers).filter((p) => p.config.redis !== undefined);
    expect(users.length).toBeGreaterThan(0);
    const redisWorkload = named('Deployment', 'redis');
    const pod = redisWorkload.spec.template.spec;
    const container = pod.containers.find((c: Obj) => c.name === 'redis');
    const env = containerEnv(container);
    // Its volumes, where the test put them: the data directory, and the Secret's keys as files.
    const root = freshDir('redis');
    const mounts = (container.volumeMounts as Obj[]).map((m) => {
      const host = join(root, m.mountPath);
      mkdirSync(host, { recursive: true });
      const secret = pod.volumes.find((v: Obj) => v.name === m.name).secret as Obj | undefined;
      if (secret !== undefined)
        for (const item of secret.items as Obj[])
          writeFileSync(join(host, item.path), `${secretStandIn(secret.secretName, item.key)}\n`);
      return { target: m.mountPath as string, host };
    });
    // Without a command, the image's entrypoint runs redis-server with the arguments (`-…` ones).
    const argv = [...(container.command ?? ['redis-server']), ...(container.args ?? [])].map((a: string) =>
      remap(`${kubeletExpand(a, env)}/`, mounts).slice(0, -1),
    );
    for (const user of users) {
      const redis = await expectRedisRequiresAuth(argv, env, redisAuthOf(user.config, user.env));
      // The probes authenticate too (else Redis never turns ready and the gateway has no Redis).
      for (const probe of [container.readinessProbe, container.livenessProbe]) {
        const script = remap(
          probeScript(probe.exec.command.map((a: string) => kubeletExpand(a, env))),
          mounts,
        );
        const run = runRedisCheck(script, redis, env);
        expect(run.stdout.trim(), run.stderr).toBe('PONG');
      }
    }
  });

  it('no admin API listens beyond loopback without a token or client certificates', async () => {
    const all = await peregrineContainers;
    expect(all.length).toBeGreaterThan(1);
    for (const p of all)
      expect(adminOpen(p.config), `${p.workload.metadata.name}/${p.container.name}`).toBe(false);
  });

  it('container ports, probes and the drain agree with what each Peregrine process serves', async () => {
    for (const { workload, container, config, ports } of await peregrineContainers) {
      const declared = (container.ports as Obj[]).map((p) => p.containerPort).sort();
      expect(declared, container.name).toEqual([...ports.all].sort());
      expect(container.readinessProbe.httpGet.path).toBe('/readyz');
      const annotations = workload.spec.template.metadata.annotations ?? {};
      if (annotations['prometheus.io/port'] !== undefined)
        expect(Number(annotations['prometheus.io/port'])).toBe(ports.admin);
      for (const probe of [container.livenessProbe, container.startupProbe])
        expect(probe.httpGet.path).toBe('/healthz');
      for (const probe of [container.readinessProbe, container.livenessProbe, container.startupProbe])
        expect(portOf([container], probe.httpGet.port)).toBe(ports.admin);
      // The grace period covers everything shutdown does (at most 5 s for the last spans).
      const grace = workload.spec.template.spec.terminationGracePeriodSeconds as number;
      const drain = secondsOf(config.lifecycle.drainTimeout);
      if (config.mode === 'gateway') {
        // The gateway stops accepting at SIGTERM: the preStop sleep covers the endpoint removal.
        expect(sleepOf(container)).toBeGreaterThanOrEqual(5);
        expect(grace).toBeGreaterThan(sleepOf(container) + drain + 5);
      } else {
        const delay = secondsOf(config.sidecar!.registry.drainDelay);
        expect(grace).toBeGreaterThan(delay + drain + 5);
        // The app keeps serving (its preStop sleep) until its peers have moved away.
        for (const app of containersOf(workload).filter((c) => c !== container))
          expect(sleepOf(app)).toBeGreaterThan(delay + 1);
      }
    }
  });

  it('Services, the PDB and the HPA point at the ports and pods that exist', async () => {
    const { ports } = await gateway();
    const target = (name: string) => {
      const s = named('Service', name);
      return s.spec.ports.map((p: Obj) =>
        portOf(podsSelectedBy(s.spec.selector).flatMap(containersOf), p.targetPort),
      );
    };
    expect(target('peregrine')).toEqual(ports.data);
    expect(target('peregrine-registry')).toEqual([ports.registry]);
    for (const s of ofKind('Service')) expect(JSON.stringify(s)).not.toContain(`${ports.admin}`);
    expect(podsSelectedBy(named('PodDisruptionBudget', 'peregrine').spec.selector.matchLabels)).toHaveLength(
      1,
    );
    const hpa = named('HorizontalPodAutoscaler', 'peregrine').spec;
    expect(named(hpa.scaleTargetRef.kind, hpa.scaleTargetRef.name)).toBeDefined();
    expect(hpa.minReplicas).toBeGreaterThanOrEqual(2);
  });

  it('the sidecar serves its app and registers with the gateway’s registry, through the registry Service', async () => {
    const { config: gw } = await gateway();
    for (const { workload, config } of (await peregrineContainers).filter(
      (p) => p.config.mode === 'sidecar',
    )) {
      const sc = config.sidecar!;
      const app = new URL(sc.inbound!.app);
      const appContainer = containersOf(workload).find((c) => c.image !== 'peregrine')!;
      expect(appContainer.env.find((e: Obj) => e.name === 'PORT').value).toBe(app.port);
      const proxy = appContainer.env.find((e: Obj) => e.name === 'HTTP_PROXY').value;
      expect(proxy).toBe(`http://${sc.outbound.address}`);
      const registry = new URL(sc.registry.url);
      expect(target(named('Service', registry.hostname), Number(registry.port))).toBe(
        servedPorts(gw).registry,
      );
      // The gateway's registry admits the sidecar's identity for its own service.
      const pattern = gw.registry!.credentials.identities.map((i) => i.spiffe);
      expect(pattern).toContain(`spiffe://${sc.identity.trustDomain}/ns/${NAMESPACE}/sa/{service}`);
      expect(workload.spec.template.spec.serviceAccountName).toBe(sc.service);
      expect(sc.registry.identity).toBe(`spiffe://${sc.identity.trustDomain}/ns/${NAMESPACE}/sa/peregrine`);
      expect(gw.upstreams[sc.service]?.discovery).toMatchObject({ registry: sc.service });
      const demo = readDockerfile(join(COMPOSE, 'demo-app.Dockerfile'));
      expect(appContainer.command).toBeUndefined();
      expect(demo.entrypoint!.filter((a) => a.endsWith('.ts')).every((f) => existsSync(join(ROOT, f)))).toBe(
        true,
      );
      expect(unreadAppEnv(appContainer.env.map((e: Obj) => e.name))).toEqual([]);
    }
    function target(service: Obj, port: number): number | undefined {
      const p = service.spec.ports.find((x: Obj) => x.port === port);
      return portOf(podsSelectedBy(service.spec.selector).flatMap(containersOf), p.targetPort);
    }
  });

  it('NetworkPolicies admit exactly the ports served: data to all, mesh and registry to peers, admin to monitoring', async () => {
    const all = await peregrineContainers;
    for (const policy of ofKind('NetworkPolicy')) {
      const pods = podsSelectedBy(policy.spec.podSelector.matchLabels);
      expect(pods.length, policy.metadata.name).toBeGreaterThan(0);
      for (const pod of pods) {
        const served = new Set<number>();
        for (const p of all.filter((x) => x.workload === pod)) {
          for (const port of p.ports.all) served.add(port);
          if (p.config.sidecar?.inbound) served.add(splitAddress(p.config.sidecar.inbound.address).port);
        }
        if (served.size === 0)
          for (const c of containersOf(pod)) for (const p of c.ports ?? []) served.add(p.containerPort);
        const admitted = (policy.spec.ingress as Obj[])
          .flatMap((r) => r.ports.map((p: Obj) => p.port))
          .sort();
        expect(admitted, policy.metadata.name).toEqual([...served].sort());
        const admins = all.filter((x) => x.workload === pod).map((x) => x.ports.admin);
        for (const rule of policy.spec.ingress as Obj[]) {
          const ports = rule.ports.map((p: Obj) => p.port);
          if (ports.some((p: number) => admins.includes(p)))
            expect(rule.from).toEqual([
              { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } },
            ]);
        }
      }
    }
    // Redis: from the gateway pods only.
    const redis = named('NetworkPolicy', 'redis').spec.ingress as Obj[];
    expect(redis.flatMap((r) => r.from)).toEqual([
      { podSelector: { matchLabels: { 'app.kubernetes.io/name': 'peregrine' } } },
    ]);
  });

  it('the PodMonitors scrape /metrics on every Peregrine process’s admin port', async () => {
    const all = await peregrineContainers;
    const monitors = ofKind('PodMonitor');
    const scraped = new Set<PeregrineContainer>();
    for (const m of monitors) {
      for (const ep of m.spec.podMetricsEndpoints) {
        expect(ep.path).toBe('/metrics');
        for (const pod of podsSelectedBy(m.spec.selector.matchLabels)) {
          const p = all.find((x) => x.workload === pod)!;
          expect(portOf([p.container], ep.port)).toBe(p.ports.admin);
          if (p.config.admin.auth.token !== undefined) expect(ep.authorization.type).toBe('Bearer');
          scraped.add(p);
        }
      }
    }
    expect(scraped.size).toBe(all.length);
  });
});

// ---------------------------------------------------------------------------------------------
// Compose

const compose = yamlDocs(join(COMPOSE, 'compose.yaml'))[0]!;
const services = compose.services as Record<string, Obj>;
const isPeregrine = (s: Obj) => s.build?.dockerfile === 'Dockerfile';
const composeEnv = (s: Obj): Record<string, string> =>
  Object.fromEntries(Object.entries((s.environment ?? {}) as Obj).map(([k, v]) => [k, String(v)]));
const volumesOf = (s: Obj) =>
  ((s.volumes ?? []) as string[]).map((v) => {
    const [source, target] = v.split(':') as [string, string];
    const bind = source.startsWith('.');
    return { source, target, bind, host: bind ? resolve(COMPOSE, source) : join(work, 'volumes', source) };
  });

/** mesh-certs.sh run as its service runs it, with its volumes here. */
const meshCerts = (() => {
  const s = services['mesh-certs']!;
  const mounts = volumesOf(s);
  for (const m of mounts) if (!m.bind) mkdirSync(m.host, { recursive: true });
  const env = Object.fromEntries(
    Object.entries(composeEnv(s)).map(([k, v]) => [k, remap(`${v}/`, mounts).slice(0, -1)]),
  );
  const script = mounts.find((m) => m.target === s.entrypoint[1])!;
  const run = spawnSync(s.entrypoint[0], [script.host], {
    cwd: ROOT,
    // The checkout is laid out as the image's WORKDIR: the script's default bin/peregrine.js.
    env: cliEnv({ ...env, CERT_OWNER: `${process.getuid!()}:${process.getgid!()}` }),
    encoding: 'utf8',
  });
  return run;
})();

/** secrets.sh run as its service runs it, with its volumes here (before the configs that read them). */
const composeSecrets = (() => {
  const s = services.secrets!;
  const mounts = volumesOf(s);
  for (const m of mounts) if (!m.bind) mkdirSync(m.host, { recursive: true });
  const env = Object.fromEntries(
    Object.entries(composeEnv(s)).map(([k, v]) => [k, remap(`${v}/`, mounts).slice(0, -1)]),
  );
  const script = mounts.find((m) => m.target === s.entrypoint[1])!;
  const me = `${process.getuid!()}:${process.getgid!()}`;
  return spawnSync(s.entrypoint[0], [script.host], {
    cwd: ROOT,
    env: cliEnv({ ...env, PEREGRINE_OWNER: me, REDIS_OWNER: me, TOKEN_OWNER: me }),
    encoding: 'utf8',
  });
})();

interface ComposePeregrine {
  readonly name: string;
  readonly service: Obj;
  readonly env: Record<string, string>;
  readonly config: Config;
  readonly configText: string;
  readonly ports: ReturnType<typeof servedPorts>;
}

const composePeregrines: Promise<ComposePeregrine[]> = (async () => {
  const out: ComposePeregrine[] = [];
  for (const [name, s] of Object.entries(services)) {
    if (!isPeregrine(s) || s.entrypoint !== undefined) continue;
    const env = composeEnv(s);
    const mounts = volumesOf(s);
    const file = env.PEREGRINE_CONFIG!;
    const mount = mounts.find((m) => file.startsWith(`${m.target}/`));
    expect(mount, `${name}: ${file} is mounted`).toBeDefined();
    const configText = readFileSync(join(mount!.host, relative(mount!.target, file)), 'utf8');
    const local = join(freshDir(name), basename(file));
    writeFileSync(local, remap(configText, mounts));
    const config = await validated(local, env);
    expect(unreadPeregrineEnv(Object.keys(env), configText, '')).toEqual([]);
    out.push({ name, service: s, env, config, configText, ports: servedPorts(config) });
  }
  return out;
})();
composePeregrines.catch(() => undefined);

const byName = async (name: string) => (await composePeregrines).find((p) => p.name === name)!;

describe('deployment/compose', () => {
  it('parses; every build names a Dockerfile that exists, and every other image is pinned', () => {
    for (const [name, s] of Object.entries(services)) {
      if (s.build)
        expect(existsSync(join(resolve(COMPOSE, s.build.context), s.build.dockerfile)), name).toBe(true);
      else expect(s.image, name).toMatch(/^[\w./-]+:[\w.-]+$/);
      expect(s.image, name).not.toMatch(/:latest$/);
    }
  });

  it('mesh-certs.sh issues the certificates the configs read', () => {
    expect(meshCerts.status, meshCerts.stderr).toBe(0);
    const s = services['mesh-certs']!;
    expect(s.restart).toBe('no');
  });

  it('secrets.sh makes the Redis password and the admin token, each readable by its owner only', () => {
    expect(composeSecrets.status, composeSecrets.stderr).toBe(0);
    expect(services.secrets!.restart).toBe('no');
    for (const volume of ['redis-secret', 'admin-token']) {
      const dir = join(work, 'volumes', volume);
      for (const f of readdirSync(dir)) {
        // No group or other access beyond reading (the token's group is Prometheus's).
        expect(statSync(join(dir, f)).mode & 0o137, `${volume}/${f}`).toBe(0);
        expect(readFileSync(join(dir, f), 'utf8')).toMatch(/[0-9a-f]{64}/);
      }
    }
    // Secrets are made, never committed.
    expect(readdirSync(COMPOSE).filter((f) => /secret|token|password|\.env$/i.test(f))).toEqual([
      'secrets.sh',
    ]);
  });

  it('Redis requires the password; the gateway authenticates with it and the health check passes', async () => {
    expect(composeSecrets.status, composeSecrets.stderr).toBe(0);
    const users = (await composePeregrines).filter((p) => p.config.redis !== undefined);
    expect(users.map((p) => p.name)).toEqual(['gateway']);
    const redisService = services.redis!;
    const mounts = volumesOf(redisService);
    const argv = (redisService.command as string[]).map((a) => remap(`${a}/`, mounts).slice(0, -1));
    for (const user of users) {
      expect(new URL(user.config.redis!.url).hostname).toBe('redis');
      const redis = await expectRedisRequiresAuth(argv, {}, redisAuthOf(user.config, user.env));
      const [kind, shell] = redisService.healthcheck.test as string[];
      expect(kind).toBe('CMD-SHELL');
      // Compose turns `$$` into `$`.
      const run = runRedisCheck(remap(shell!.replaceAll('$$', '$'), mounts), redis, {});
      expect(run.status, `${run.stdout}${run.stderr}`).toBe(0);
    }
    expect(redisService.depends_on.secrets.condition).toBe('service_completed_successfully');
  });

  it('every admin API needs a token, and nothing is published beyond the host’s loopback', async () => {
    const all = await composePeregrines;
    for (const p of all) {
      expect(adminOpen(p.config), p.name).toBe(false);
      expect(p.config.admin.auth.token, p.name).toBeDefined();
    }
    for (const [name, s] of Object.entries(services))
      for (const port of (s.ports ?? []) as string[]) expect(port, name).toMatch(/^127\.0\.0\.1:\d+:\d+$/);
  });

  it('each Peregrine service runs the image’s entrypoint with a config that passes validate', async () => {
    const all = await composePeregrines;
    expect(all.map((p) => `${p.name}:${p.config.mode}`).sort()).toEqual([
      'gateway:gateway',
      'orders-sidecar:sidecar',
      'payments-sidecar:sidecar',
    ]);
    for (const p of all) {
      // The image's ENTRYPOINT and CMD (run, reading PEREGRINE_CONFIG), and its HEALTHCHECK,
      // which reads the same variable.
      expect(p.service.command, p.name).toBeUndefined();
      expect(p.service.healthcheck, p.name).toBeUndefined();
      expect(IMAGE.cmd).toEqual(['run']);
      expect(IMAGE.healthcheck!.slice(1)).toEqual(['healthcheck']);
    }
    const gw = await byName('gateway');
    expect(gw.config.registry?.store).toBe('redis');
    expect(new URL(gw.config.redis!.url).hostname).toBe('redis');
    expect(redisRateLimit(gw.config)).toBe(true);
    expect(gw.service.ports.map((p: string) => Number(p.split(':').at(-1)))).toEqual(gw.ports.data);
  });

  it('depends_on waits on conditions its targets can meet', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const [target, dep] of Object.entries((s.depends_on ?? {}) as Obj)) {
        const t = services[target];
        expect(t, `${name} → ${target}`).toBeDefined();
        if (dep.condition === 'service_healthy')
          expect(t!.healthcheck !== undefined || (isPeregrine(t!) && IMAGE.healthcheck !== undefined)).toBe(
            true,
          );
        if (dep.condition === 'service_completed_successfully') expect(t!.restart).toBe('no');
      }
    }
  });

  it('each demo app shares its sidecar’s network and uses it: app port, proxy, readiness, tracing', async () => {
    const apps = Object.entries(services).filter(([, s]) => s.network_mode !== undefined);
    expect(apps.map(([n]) => n).sort()).toEqual(['orders', 'payments']);
    const demo = readDockerfile(resolve(COMPOSE, apps[0]![1].build.context, apps[0]![1].build.dockerfile));
    // @opentelemetry/sdk-node is a devDependency: the demo image must install dev dependencies.
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
    expect(pkg.devDependencies['@opentelemetry/sdk-node']).toBeDefined();
    expect(demo.stage.some((i) => i.keyword === 'RUN' && i.args.includes('npm ci --include=dev'))).toBe(true);
    expect(demo.entrypoint!.filter((a) => a.endsWith('.ts')).every((f) => existsSync(join(ROOT, f)))).toBe(
      true,
    );
    for (const [name, app] of apps) {
      const sidecarName = app.network_mode.replace(/^service:/, '');
      const sidecar = await byName(sidecarName);
      const sc = sidecar.config.sidecar!;
      expect(sc.service).toBe(name);
      const env = composeEnv(app);
      expect(env.SERVICE).toBe(name);
      expect(new URL(sc.inbound!.app).port).toBe(env.PORT);
      expect(env.HTTP_PROXY).toBe(`http://${sc.outbound.address}`);
      const callees = Array.isArray(sc.outbound.services)
        ? sc.outbound.services
        : Object.keys(sc.outbound.services);
      if (env.NEXT !== undefined) expect(callees).toContain(env.NEXT);
      expect(unreadAppEnv(Object.keys(env))).toEqual([]);
      const otlp = new URL(env.OTEL_EXPORTER_OTLP_ENDPOINT!);
      expect(env.NO_PROXY!.split(',')).toContain(otlp.hostname);
      expect(sc.registry.url).toBe(`https://gateway:${(await byName('gateway')).ports.registry}`);
    }
  });

  it('traces go to the Tempo receiver every process names', async () => {
    const tempo = services.tempo!;
    const mount = volumesOf(tempo).find((m) => tempo.command.includes(`-config.file=${m.target}`))!;
    const config = parse(readFileSync(mount.host, 'utf8')) as Obj;
    const otlpHttp = splitAddress(config.distributor.receivers.otlp.protocols.http.endpoint).port;
    const endpoints = [
      ...(await composePeregrines).map((p) => p.config.telemetry.tracing.endpoint),
      ...Object.values(services)
        .map((s) => composeEnv(s).OTEL_EXPORTER_OTLP_ENDPOINT)
        .filter((e) => e !== undefined),
    ];
    expect(endpoints.length).toBeGreaterThan(4);
    for (const e of endpoints) expect(new URL(e!).host).toBe(`tempo:${otlpHttp}`);
  });

  it('Prometheus scrapes every Peregrine process and its config passes promtool with the rules mounted', async () => {
    const prometheus = services.prometheus!;
    expect(prometheus.command).toContain('--enable-feature=exemplar-storage');
    const root = freshDir('prometheus');
    for (const m of volumesOf(prometheus)) {
      mkdirSync(dirname(join(root, m.target)), { recursive: true });
      cpSync(m.host, join(root, m.target), { recursive: true });
    }
    const configArg = (prometheus.command as string[]).find((a) => a.startsWith('--config.file='))!;
    const configFile = join(root, configArg.split('=')[1]!);
    const promtool = findTool(PROMTOOL, 'the deployment manifests test');
    const run = spawnSync(promtool.path, ['check', 'config', configFile], {
      encoding: 'utf8',
      env: promtool.env,
    });
    expect(run.status, `${run.stdout}${run.stderr}`).toBe(0);
    const config = parse(readFileSync(configFile, 'utf8')) as Obj;
    expect(config.rule_files).toHaveLength(2);
    const targets = (config.scrape_configs as Obj[])
      .flatMap((j) => {
        expect(j.metrics_path ?? '/metrics').toBe('/metrics');
        return j.static_configs.flatMap((s: Obj) => s.targets as string[]);
      })
      .sort();
    const expected = (await composePeregrines).map((p) => `${p.name}:${p.ports.admin}`).sort();
    expect(targets).toEqual(expected);
    // Each job sends the token of the processes it scrapes (the file resolves from the config's directory).
    for (const job of config.scrape_configs as Obj[]) {
      for (const target of job.static_configs.flatMap((c: Obj) => c.targets as string[])) {
        const p = (await composePeregrines).find((x) => `${x.name}:${x.ports.admin}` === target)!;
        if (p.config.admin.auth.token === undefined) continue;
        expect(job.authorization?.type ?? 'Bearer', target).toBe('Bearer');
        const sent = readFileSync(resolve(dirname(configFile), job.authorization.credentials_file), 'utf8');
        expect(sent.trim(), target).toBe(readTokenRef(p.config.admin.auth.token, 'admin token', p.env));
      }
    }
    expect(services.grafana!.depends_on.prometheus).toBeDefined();
  });

  it('Grafana provisions the dashboards of dashboards/ and links exemplars to the trace datasource', () => {
    const grafana = services.grafana!;
    const mounts = volumesOf(grafana);
    const provisioning = mounts.find((m) => m.target === '/etc/grafana/provisioning')!;
    const providers = readdirSync(join(provisioning.host, 'dashboards')).flatMap(
      (f) => yamlDocs(join(provisioning.host, 'dashboards', f))[0]!.providers as Obj[],
    );
    expect(providers.length).toBeGreaterThan(0);
    const dashboards = readdirSync(DASHBOARD_DIR).filter((f) => f.endsWith('.json'));
    expect(dashboards.length).toBeGreaterThan(0);
    for (const p of providers) {
      const m = mounts.find((x) => x.target === p.options.path);
      expect(m, `the provider's path ${p.options.path} is mounted`).toBeDefined();
      expect(resolve(m!.host)).toBe(resolve(DASHBOARD_DIR));
    }
    const datasources = readdirSync(join(provisioning.host, 'datasources')).flatMap(
      (f) => yamlDocs(join(provisioning.host, 'datasources', f))[0]!.datasources as Obj[],
    );
    const uids = new Set(datasources.map((d) => d.uid));
    const links = datasources.flatMap((d) => d.jsonData?.exemplarTraceIdDestinations ?? []);
    expect(links.length).toBeGreaterThan(0);
    for (const l of links) expect(uids).toContain(l.datasourceUid);
    const tempo = parse(
      readFileSync(volumesOf(services.tempo!).find((m) => m.target.endsWith('.yaml'))!.host, 'utf8'),
    );
    const ports: Record<string, number> = { prometheus: 9090, tempo: tempo.server.http_listen_port };
    for (const d of datasources) {
      const url = new URL(d.url);
      expect(services[url.hostname], d.url).toBeDefined();
      expect(Number(url.port), d.url).toBe(ports[url.hostname]);
    }
  });
});
