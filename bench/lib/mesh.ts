/**
 * The mesh of bench/mesh.ts (and of bench/instructions.ts's sidecar targets), started from the
 * Peregrine under test: certificates made with `peregrine certs` (a development CA and one SVID
 * per service), a registry, the inbound sidecar in front of the bench upstream, the outbound
 * sidecar whose destination is the inbound one, and, for comparison, a passthrough gateway to the
 * same upstream, or a chain of two (bench/lib/mesh-cpu.ts says why). With BENCH_PIN=1 the two
 * sidecars and the passthrough gateway(s) share the target CPU; the registry stays with the bench
 * on the others (it is not on the request path).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCerts } from '../../src/cli/certs.ts';
import { UPSTREAM_BODY } from '../peers/upstream.ts';
import {
  inboundSidecarConfig,
  MESH_CALLER,
  MESH_DESTINATION,
  MESH_HOST_HEADER,
  MESH_NAMESPACE,
  MESH_TRUST_DOMAIN,
  meshConfigYaml,
  meshProtocolFromEnv,
  outboundSidecarConfig,
  type SidecarFiles,
  SLOW_CALLER_POOL,
  SLOW_PEER_TIMEOUTS,
} from './mesh-config.ts';
import { peregrineConfigYaml } from './peregrine-config.ts';
import { type PinPlan, pinTarget } from './pin.ts';
import { freePort, type Managed, waitForHttp } from './proc.ts';
import { metricSum, scrapeMetrics } from './prom.ts';
import { benchRegistryToken, REGISTRY_TOKEN_ENV, registryGatewayYaml } from './registry-config.ts';
import { type BenchContext, startPeer, startPeregrine } from './targets.ts';

export interface MeshCerts {
  /** The destination's (inbound sidecar's) SVID. */
  destination: SidecarFiles;
  /** The caller's (outbound sidecar's) SVID. */
  caller: SidecarFiles;
}

/**
 * `peregrine certs init`, then `issue` for both services, into `dir` (the project's own code, run
 * in this process): ECDSA P-256 SVIDs for spiffe://bench.local/ns/bench/sa/{bench,client}.
 */
export async function makeMeshCerts(dir: string): Promise<MeshCerts> {
  const certs = async (...argv: string[]): Promise<void> => {
    const errors: string[] = [];
    const code = await runCerts(argv, { stdout: () => {}, stderr: (s) => errors.push(s) });
    if (code !== 0) throw new Error(`peregrine certs ${argv.join(' ')}: ${errors.join('\n')}`);
  };
  const caDir = join(dir, 'mesh-ca');
  await certs('init', '--dir', caDir, '--trust-domain', MESH_TRUST_DOMAIN, '--ttl', '48h');
  const issue = async (service: string): Promise<SidecarFiles> => {
    const out = join(caDir, MESH_NAMESPACE, service);
    await certs('issue', '--dir', caDir, '--service', service, '--namespace', MESH_NAMESPACE, '--out', out);
    return { cert: join(out, 'tls.crt'), key: join(out, 'tls.key'), ca: join(out, 'ca.crt') };
  };
  return { destination: await issue(MESH_DESTINATION), caller: await issue(MESH_CALLER) };
}

export type SidecarRole = 'inbound' | 'outbound';

export interface MeshOptions {
  /**
   * Run this sidecar under `wrap` (callgrind), the rest as usual; the outbound sidecar then waits
   * longer for the inbound one (SLOW_PEER_TIMEOUTS).
   */
  wrapped?: { role: SidecarRole; command: string; args: readonly string[]; readyTimeoutMs: number };
  /** Node options for one sidecar (e.g. the inspector, bench/allocations.ts). */
  nodeArgs?: { role: SidecarRole; args: readonly string[] };
  /**
   * Start the passthrough gateway too (default true); `chain`: two, the first forwarding to the
   * second and the second to the upstream, so that the passthrough path, like the mesh hop, has two
   * gateways per request.
   */
  passthrough?: boolean | 'chain';
}

export interface MeshGateway {
  readonly proc: Managed;
  readonly admin: string;
}

export interface RunningMesh {
  readonly registry: MeshGateway;
  readonly inbound: MeshGateway;
  readonly outbound: MeshGateway;
  readonly passthrough: (MeshGateway & { url: string }) | undefined;
  /** With `passthrough: 'chain'`: the second passthrough gateway, which the first forwards to. */
  readonly passthroughBack: (MeshGateway & { url: string }) | undefined;
  /** The outbound listener: where the client sends its requests, with `headers`. */
  readonly url: string;
  /** Host: bench (the destination, as an application names it). */
  readonly headers: Readonly<Record<string, string>>;
  /** The processes on the target CPU (sidecars and passthrough gateways). */
  readonly pids: readonly number[];
  stop(): Promise<void>;
}

/** What starting the mesh needs of a bench session (bench/instructions.ts has no full one). */
export type MeshContext = Pick<BenchContext, 'peregrineDir' | 'tmpDir' | 'pin'> & {
  upstream: { origin: string };
};

let seq = 0;

/**
 * Start the mesh and wait until a request through both sidecars answers with the upstream's body
 * (the inbound sidecar has registered, the outbound one has seen it). Stops what it started when
 * a step fails.
 */
export async function startMesh(
  ctx: MeshContext,
  certs: MeshCerts,
  o: MeshOptions = {},
): Promise<RunningMesh> {
  const n = ++seq;
  const started: Managed[] = [];
  const stop = async () => void (await Promise.all(started.map((p) => p.stop(8000))));
  const env = { [REGISTRY_TOKEN_ENV]: benchRegistryToken() };
  const start = async (
    name: string,
    yaml: (listenPort: number, adminPort: number) => string,
    role?: SidecarRole,
  ): Promise<{ proc: Managed; url: string; admin: string }> => {
    const wrap = role !== undefined && o.wrapped?.role === role ? o.wrapped : undefined;
    const g = await startPeregrine({
      name,
      dir: ctx.peregrineDir,
      configFile: join(ctx.tmpDir, `${name}-${n}.yaml`),
      yaml,
      env,
      stdout: 'pipe',
      wrap,
      readyTimeoutMs: wrap?.readyTimeoutMs,
      nodeArgs: role !== undefined && o.nodeArgs?.role === role ? o.nodeArgs.args : undefined,
    });
    started.push(g.proc);
    return g;
  };
  try {
    const registryPort = await freePort();
    const registryUrl = `http://127.0.0.1:${registryPort}`;
    const registry = await start('mesh-registry', (listenPort, adminPort) =>
      registryGatewayYaml({
        listenPort,
        adminPort,
        port: registryPort,
        store: 'memory',
        services: [MESH_DESTINATION, MESH_CALLER],
        allowLoopback: true,
        upstreams: [],
      }),
    );
    // /readyz of an inbound sidecar answers once the app is ready and its registration active.
    const inbound = await start(
      'sidecar-inbound',
      (inboundPort, adminPort) =>
        meshConfigYaml(
          'inbound',
          inboundSidecarConfig({
            inboundPort,
            adminPort,
            registryUrl,
            app: ctx.upstream.origin,
            files: certs.destination,
            underValgrind: o.wrapped?.role === 'inbound',
          }),
        ),
      'inbound',
    );
    const outbound = await start(
      'sidecar-outbound',
      (outboundPort, adminPort) =>
        meshConfigYaml(
          'outbound',
          outboundSidecarConfig({
            outboundPort,
            adminPort,
            registryUrl,
            files: certs.caller,
            underValgrind: o.wrapped?.role === 'outbound',
            upstream: {
              ...(o.wrapped ? SLOW_PEER_TIMEOUTS : {}),
              ...(o.wrapped?.role === 'outbound' ? SLOW_CALLER_POOL : {}),
              ...meshProtocolFromEnv(process.env),
            },
          }),
        ),
      'outbound',
    );
    const passthroughTo = (name: string, upstreamOrigin: string) =>
      start(name, (listenPort, adminPort) =>
        peregrineConfigYaml({ profile: 'passthrough', listenPort, adminPort, upstreamOrigin }),
      );
    const passthroughBack =
      o.passthrough === 'chain'
        ? await passthroughTo('mesh-passthrough-back', ctx.upstream.origin)
        : undefined;
    const passthrough =
      o.passthrough === false
        ? undefined
        : await passthroughTo(
            'mesh-passthrough',
            passthroughBack ? new URL(passthroughBack.url).origin : ctx.upstream.origin,
          );
    const pids = [
      inbound.proc.pid,
      outbound.proc.pid,
      ...[passthrough, passthroughBack].flatMap((g) => (g ? [g.proc.pid] : [])),
    ];
    if (ctx.pin) for (const pid of pids) pinTarget(ctx.pin, pid);
    const through = await waitForHttp(outbound.url, {
      proc: outbound.proc,
      headers: { ...MESH_HOST_HEADER },
      timeoutMs: o.wrapped ? o.wrapped.readyTimeoutMs : 15_000,
    });
    if (through.body !== UPSTREAM_BODY.toString())
      throw new Error(
        `the mesh answered 200 but not with the upstream's body: ${through.body.slice(0, 200)}`,
      );
    if (passthroughBack) await waitForHttp(passthroughBack.url, { proc: passthroughBack.proc });
    if (passthrough) await waitForHttp(passthrough.url, { proc: passthrough.proc });
    return {
      registry: { proc: registry.proc, admin: registry.admin },
      inbound: { proc: inbound.proc, admin: inbound.admin },
      outbound: { proc: outbound.proc, admin: outbound.admin },
      passthrough: passthrough && { proc: passthrough.proc, admin: passthrough.admin, url: passthrough.url },
      passthroughBack: passthroughBack && {
        proc: passthroughBack.proc,
        admin: passthroughBack.admin,
        url: passthroughBack.url,
      },
      url: outbound.url,
      headers: MESH_HOST_HEADER,
      pids,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * For the light tools outside a bench session (bench/mesh-probe.ts, bench/mesh-syscalls.ts): the
 * bench upstream, certificates in a temporary directory and the mesh with one passthrough gateway
 * (or a chain of two), from BENCH_PEREGRINE_DIR or this checkout; `fn` runs against it, then
 * everything stops.
 */
export async function withStandaloneMesh<T>(
  name: string,
  pin: PinPlan | undefined,
  fn: (mesh: RunningMesh) => Promise<T>,
  passthrough: MeshOptions['passthrough'] = true,
): Promise<T> {
  const root = join(import.meta.dirname, '../..');
  const tmp = mkdtempSync(join(tmpdir(), `peregrine-${name}-`));
  const up = await startPeer({ node: process.execPath, root }, 'upstream.ts');
  try {
    await waitForHttp(`${up.origin}/`, { proc: up.proc });
    const mesh = await startMesh(
      {
        peregrineDir: process.env.BENCH_PEREGRINE_DIR ?? root,
        tmpDir: tmp,
        pin,
        upstream: { origin: up.origin },
      },
      await makeMeshCerts(tmp),
      { passthrough },
    );
    try {
      return await fn(mesh);
    } finally {
      await mesh.stop();
    }
  } finally {
    await up.proc.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
}

const certsByDir = new Map<string, Promise<MeshCerts>>();

/** The session's mesh certificates, made on first use in its temp dir. */
export function meshCertsFor(ctx: Pick<BenchContext, 'tmpDir'>): Promise<MeshCerts> {
  let certs = certsByDir.get(ctx.tmpDir);
  if (!certs) {
    certs = makeMeshCerts(ctx.tmpDir);
    certsByDir.set(ctx.tmpDir, certs);
  }
  return certs;
}

/** What the two sidecars counted so far: requests through the hop and TLS handshakes between them. */
export interface MeshCounts {
  /** Requests the outbound sidecar answered (any status). */
  requests: number;
  /** Handshakes the outbound sidecar made to the destination: full, and resumed sessions. */
  handshakesNew: number;
  handshakesResumed: number;
  /** Handshakes the inbound sidecar's listener completed. */
  inboundHandshakes: number;
}

export async function meshCounts(mesh: RunningMesh): Promise<MeshCounts> {
  const [out, inb] = await Promise.all([
    scrapeMetrics(mesh.outbound.admin),
    scrapeMetrics(mesh.inbound.admin),
  ]);
  const upstream = `outbound.${MESH_DESTINATION}`;
  return {
    requests: metricSum(out, 'peregrine_mesh_requests_total', { direction: 'outbound' }),
    handshakesNew: metricSum(out, 'peregrine_upstream_tls_handshakes_total', { upstream, session: 'new' }),
    handshakesResumed: metricSum(out, 'peregrine_upstream_tls_handshakes_total', {
      upstream,
      session: 'resumed',
    }),
    inboundHandshakes: metricSum(inb, 'peregrine_tls_handshakes_total', { listener: 'inbound' }),
  };
}

/** `later` minus `earlier`, field by field. */
export function countsBetween(earlier: MeshCounts, later: MeshCounts): MeshCounts {
  return {
    requests: later.requests - earlier.requests,
    handshakesNew: later.handshakesNew - earlier.handshakesNew,
    handshakesResumed: later.handshakesResumed - earlier.handshakesResumed,
    inboundHandshakes: later.inboundHandshakes - earlier.inboundHandshakes,
  };
}

/** Handshakes the outbound sidecar made per 1,000 requests it answered. */
export function handshakesPer1000(c: MeshCounts): number | undefined {
  return c.requests > 0 ? ((c.handshakesNew + c.handshakesResumed) * 1000) / c.requests : undefined;
}
