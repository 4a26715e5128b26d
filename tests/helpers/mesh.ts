/**
 * A mesh for tests: a CA and SPIFFE certificates as files (one directory per workload, in the
 * names csi-driver-spiffe uses), the config of a gateway that runs the registry (registration API
 * over mTLS, each identity registering its own service), and sidecar configs that register with it
 * and follow it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import type { ConfigInput } from '../../src/config/schema.ts';
import { type CertFiles, TestCa, writeCertFiles } from './certs.ts';

export const MESH_TD = 'mesh.test';
export const REGISTRY_ID = `spiffe://${MESH_TD}/ns/mesh/sa/registry`;

/** The SPIFFE ID of a service's workloads. */
export function meshId(service: string, ns = 'default'): string {
  return `spiffe://${MESH_TD}/ns/${ns}/sa/${service}`;
}

export interface MeshPki {
  readonly ca: TestCa;
  readonly otherCa: TestCa;
  /** Certificate files of each workload (`registry`, and each service), issued by `ca`. */
  readonly files: Record<string, CertFiles>;
  /** Issue files for one more workload (by `ca`, or by another CA). */
  issue(service: string, by?: TestCa): Promise<CertFiles>;
}

export async function createMeshPki(services: readonly string[]): Promise<MeshPki> {
  const [ca, otherCa] = await Promise.all([TestCa.create('Mesh CA'), TestCa.create('Other CA')]);
  const files: Record<string, CertFiles> = {};
  const issue = async (service: string, by: TestCa = ca): Promise<CertFiles> => {
    const id = service === 'registry' ? REGISTRY_ID : meshId(service);
    const cert = await by.issue({ cn: service, uris: [id] });
    // The trust bundle is always the mesh's: a workload with a foreign certificate still trusts the mesh.
    return writeCertFiles(cert, ca.cert);
  };
  await Promise.all(
    ['registry', ...services].map(async (s) => {
      files[s] = await issue(s);
    }),
  );
  return { ca, otherCa, files, issue };
}

/**
 * A gateway running the registry: the registration API on 127.0.0.1:0 over TLS with its SVID,
 * client certificates optional (verified when sent); each mesh identity registers the service
 * its name says; `tokens` add bearer credentials (each `{ name, env, services }`).
 */
export function registryGatewayConfig(
  pki: MeshPki,
  extra: { tokens?: { name: string; env: string; services: string[] }[] } = {},
): Partial<ConfigInput> {
  const f = pki.files.registry!;
  return {
    registry: {
      listener: {
        address: '127.0.0.1:0',
        tls: { cert: f.cert, key: f.key, clientAuth: 'optional', clientCa: f.ca, watch: false },
      },
      credentials: {
        identities: [{ spiffe: `spiffe://${MESH_TD}/ns/*/sa/{service}` }],
        tokens: extra.tokens ?? [],
      },
      addresses: { allowLoopback: true },
      lease: { minTtl: '300ms' },
      sync: { sweepInterval: '50ms' },
    },
  };
}

export interface SidecarOptions {
  readonly service: string;
  readonly files: CertFiles;
  /** Base URL of the registration API. */
  readonly registry: string;
  /** The local application's origin; absent: an outbound-only sidecar. */
  readonly app?: string;
  readonly allow?: string[];
  readonly services?: string[];
  readonly readinessPath?: string;
  /** The registry credential is a token in this variable (instead of the certificate). */
  readonly tokenEnv?: string;
  readonly inboundAddress?: string;
  readonly outboundAddress?: string;
  readonly adminAddress?: string;
}

/** A sidecar's config: listeners on 127.0.0.1:0, short leases and drain, fast readiness checks. */
export function sidecarConfig(o: SidecarOptions): Partial<ConfigInput> {
  return {
    mode: 'sidecar',
    admin: { address: o.adminAddress ?? '127.0.0.1:0' },
    lifecycle: { watchConfig: false, drainTimeout: '2s' },
    sidecar: {
      service: o.service,
      identity: { trustDomain: MESH_TD, cert: o.files.cert, key: o.files.key, ca: o.files.ca, watch: false },
      inbound:
        o.app === undefined
          ? undefined
          : {
              address: o.inboundAddress ?? '127.0.0.1:0',
              app: o.app,
              readiness: { path: o.readinessPath ?? '/ready', interval: '50ms', timeout: '500ms' },
              allow: o.allow,
            },
      outbound: {
        address: o.outboundAddress ?? '127.0.0.1:0',
        services: o.services ?? [],
        // One fast retry elsewhere, so a request never waits long on an instance just gone.
        upstream: { retries: { maxAttempts: 2, backoff: { base: '1ms', max: '5ms' } } },
      },
      registry: {
        url: o.registry,
        ...(o.registry.startsWith('https:') ? { identity: REGISTRY_ID } : {}),
        ttl: '3s',
        drainDelay: '300ms',
        ...(o.tokenEnv === undefined ? {} : { token: { env: o.tokenEnv } }),
      },
    },
  };
}

/** A local application: /ready answers 200 while `ready`, 503 otherwise; anything else is echoed as JSON. */
export interface TestApp {
  readonly url: string;
  ready: boolean;
  readonly requests: { url: string; headers: IncomingMessage['headers'] }[];
  close(): Promise<void>;
}

export async function startApp(ready = true): Promise<TestApp> {
  const requests: TestApp['requests'] = [];
  const app = { ready, requests } as { ready: boolean; requests: TestApp['requests'] };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (req.url === '/ready') {
      res.writeHead(app.ready ? 200 : 503).end();
      return;
    }
    requests.push({ url: req.url ?? '', headers: req.headers });
    req.resume();
    req.once('end', () => {
      const body = JSON.stringify({ url: req.url, headers: req.headers });
      res.writeHead(200, { 'content-type': 'application/json' }).end(body);
    });
  });
  server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(app, {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}

/** A request to `service` through an outbound listener, as an application makes it (Host names the service). */
export async function callThrough(
  outboundPort: number,
  service: string,
  path = '/',
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const res = await request(`http://127.0.0.1:${outboundPort}${path}`, {
    headers: { host: service, ...headers },
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
}
