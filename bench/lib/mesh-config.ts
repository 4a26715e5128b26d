/**
 * The mesh benchmark's configurations (bench/mesh.ts): two sidecars and the registry between
 * them, set like the passthrough profile (access log off, no trace export, metrics on, info logs),
 * so what differs from passthrough is the mesh: mTLS on both sides, identity checks, the mesh
 * metrics, the registry-discovered destination.
 *
 *   client → outbound sidecar (service `client`, Host `bench`)
 *          → mTLS, the destination's SPIFFE ID checked → inbound sidecar (service `bench`,
 *            callers' IDs checked against an allow-list of `client`) → the bench upstream (the app)
 *
 * The inbound sidecar registers `bench` (its inbound port) with the registry once the app
 * answers; the outbound sidecar follows the registry for `bench`. Both authenticate to the
 * registry with the bench token over plain HTTP on loopback (the registry is not what is
 * measured).
 */
import { stringify } from 'yaml';
import type { ConfigInput } from '../../src/config/schema.ts';
import { REGISTRY_TOKEN_ENV } from './registry-config.ts';

export const MESH_TRUST_DOMAIN = 'bench.local';
export const MESH_NAMESPACE = 'bench';
/** The destination service: the inbound sidecar's, in front of the bench upstream. */
export const MESH_DESTINATION = 'bench';
/** The calling service: the outbound sidecar's. */
export const MESH_CALLER = 'client';
/** What the client sends to the outbound listener to reach the destination. */
export const MESH_HOST_HEADER: Readonly<Record<string, string>> = { Host: MESH_DESTINATION };

/** The SPIFFE ID of a bench service (what `peregrine certs issue` puts in its certificate). */
export function meshIdentity(service: string): string {
  return `spiffe://${MESH_TRUST_DOMAIN}/ns/${MESH_NAMESPACE}/sa/${service}`;
}

/** A sidecar's certificate, key and CA bundle (the files `peregrine certs issue` writes). */
export interface SidecarFiles {
  cert: string;
  key: string;
  ca: string;
}

interface SidecarBase {
  adminPort: number;
  /** The registration API, `http://127.0.0.1:<port>`. */
  registryUrl: string;
  files: SidecarFiles;
  /** A sidecar under valgrind (bench/instructions.ts): see UNDER_VALGRIND. */
  underValgrind?: boolean;
}

/**
 * A sidecar under valgrind runs ~50× slower, which its periodic work does not know: its 1 s
 * readiness probe of the app times out (and the registration drains), and per request counted,
 * probes and lease renewals weigh ~50× more than natively. Under valgrind it probes and renews
 * seldom, with long timeouts; what a request runs is unchanged.
 */
const UNDER_VALGRIND = {
  readiness: { interval: '60s', timeout: '60s' },
  ttl: '5m',
} as const;

export interface InboundSidecarOptions extends SidecarBase {
  inboundPort: number;
  /** The local application: the bench upstream's origin. */
  app: string;
}

export interface OutboundSidecarOptions extends SidecarBase {
  outboundPort: number;
  /** Policy sections of the destination that differ from a destination's defaults. */
  upstream?: Record<string, unknown>;
}

/**
 * Timeouts for a peer under valgrind (bench/instructions.ts), which is ~50× slower: a TLS handshake
 * with one can outlast the 2 s connect timeout. Only the timers' lengths change, not the code a
 * request runs.
 */
export const SLOW_PEER_TIMEOUTS = {
  timeouts: { connect: '60s', response: '120s', idle: '120s', request: '0s' },
} as const;

/**
 * The pool of an outbound sidecar under valgrind: few connections, each kept busy. With one per
 * client connection (50), some sat idle past the inbound listener's 5 s keep-alive while the slow
 * sidecar's own idle timer ran late, so it sent requests on connections already closed (resets,
 * then the circuit breaker opened). Requests wait in the pool's queue instead.
 */
export const SLOW_CALLER_POOL = { pool: { connections: 8 } } as const;

function sidecarFrame(service: string, o: SidecarBase): ConfigInput {
  return {
    mode: 'sidecar',
    admin: { address: `127.0.0.1:${o.adminPort}` },
    telemetry: {
      serviceName: `peregrine-bench-${service}-sidecar`,
      logLevel: 'info',
      tracing: { exporter: 'none', sampleRatio: 0 },
      accessLog: { enabled: false },
    },
    lifecycle: { watchConfig: false, drainTimeout: '1s' },
  };
}

function sidecarSection(service: string, o: SidecarBase) {
  return {
    service,
    identity: {
      trustDomain: MESH_TRUST_DOMAIN,
      cert: o.files.cert,
      key: o.files.key,
      ca: o.files.ca,
      // The files do not change during a run.
      watch: false,
    },
    registry: {
      url: o.registryUrl,
      token: { env: REGISTRY_TOKEN_ENV },
      // Every process stops together at the end of a measurement: nobody to drain for.
      drainDelay: '0s',
      ...(o.underValgrind ? { ttl: UNDER_VALGRIND.ttl } : {}),
    },
  };
}

/**
 * The destination's sidecar: its inbound listener (mTLS, only `client` may call) in front of the
 * bench upstream. Its outbound listener, which every sidecar has, lists no destinations and takes
 * a port the system picks.
 */
export function inboundSidecarConfig(o: InboundSidecarOptions): ConfigInput {
  return {
    ...sidecarFrame(MESH_DESTINATION, o),
    sidecar: {
      ...sidecarSection(MESH_DESTINATION, o),
      inbound: {
        address: `127.0.0.1:${o.inboundPort}`,
        app: o.app,
        readiness: { path: '/', ...(o.underValgrind ? UNDER_VALGRIND.readiness : { interval: '1s' }) },
        allow: [meshIdentity(MESH_CALLER)],
      },
      outbound: { address: '127.0.0.1:0', services: [] },
    },
  };
}

/**
 * The caller's sidecar, outbound only: Host `bench` goes to the instances of `bench` in the
 * registry, over mTLS with `bench`'s SPIFFE ID required (the default identity pattern), with the
 * upstream policy a destination gets by default (the same resilience defaults as passthrough).
 */
export function outboundSidecarConfig(o: OutboundSidecarOptions): ConfigInput {
  return {
    ...sidecarFrame(MESH_CALLER, o),
    sidecar: {
      ...sidecarSection(MESH_CALLER, o),
      outbound: {
        address: `127.0.0.1:${o.outboundPort}`,
        services: [MESH_DESTINATION],
        ...(o.upstream && Object.keys(o.upstream).length > 0 ? { upstream: o.upstream } : {}),
      },
    },
  };
}

/**
 * BENCH_MESH_PROTOCOL: what the hop between the two sidecars speaks, as the outbound sidecar's
 * `protocol` (the inbound listener offers HTTP/2 and HTTP/1.1): `http1` (the default, nothing
 * set) or `h2`. The mesh benchmark and the callgrind targets take it (decisions.md, "The mesh
 * hop's CPU: what was measured, kept and left").
 */
export function meshProtocolFromEnv(env: NodeJS.ProcessEnv): { protocol?: 'h2' } {
  const raw = env.BENCH_MESH_PROTOCOL ?? 'http1';
  if (raw === 'http1') return {};
  if (raw === 'h2') return { protocol: 'h2' };
  throw new Error(`BENCH_MESH_PROTOCOL must be http1 or h2, not ${JSON.stringify(raw)}`);
}

export function meshConfigYaml(which: string, config: ConfigInput): string {
  return `# Generated by bench/lib/mesh-config.ts (${which})\n${stringify(config)}`;
}
