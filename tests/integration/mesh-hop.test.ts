/**
 * The connection between two sidecars, as the wire sees it: the inbound listener's accepted
 * sockets have TCP_NODELAY (Nagle's algorithm would hold a write behind an unacknowledged one
 * until the peer's delayed ACK, 40 ms or more), its keep-alive suits the peers' pools (idle
 * connections are not closed and made again, each with a TLS handshake, while traffic goes on),
 * and the outbound sidecar sends its peer no X-Forwarded-* headers the peer would drop. Real
 * sidecars, registry and applications; certificates made in the test.
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TlsListener } from '../../src/dataplane/listener/tls-listener.ts';
import { removeCertFiles } from '../helpers/certs.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import {
  callThrough,
  createMeshPki,
  type MeshPki,
  meshId,
  registryGatewayConfig,
  sidecarConfig,
  startApp,
  type TestApp,
} from '../helpers/mesh.ts';
import { noDelayOf } from '../helpers/socket-options.ts';
import { until } from '../helpers/until.ts';

let pki: MeshPki;
let registry: TestGateway;
let app: TestApp;
let api: TestGateway;
let web: TestGateway;
/** Sockets the api sidecar's inbound listener accepted, and the request heads it read. */
const accepted: Socket[] = [];
const arrived: IncomingMessage[] = [];

beforeAll(async () => {
  pki = await createMeshPki(['api', 'web']);
  registry = await startGateway(registryGatewayConfig(pki));
  const registryUrl = `https://127.0.0.1:${registry.gateway.registryAddress.port}`;
  app = await startApp(true);
  api = await startGateway(
    sidecarConfig({
      service: 'api',
      files: pki.files.api!,
      registry: registryUrl,
      app: app.url,
      allow: [meshId('web')],
    }),
  );
  const inbound = api.gateway.listeners.find((l) => l.config.name === 'inbound') as TlsListener;
  inbound.server.on('connection', (s: Socket) => accepted.push(s));
  inbound.server.on('request', (req: IncomingMessage) => arrived.push(req));
  web = await startGateway(
    sidecarConfig({ service: 'web', files: pki.files.web!, registry: registryUrl, services: ['api'] }),
  );
  await until(
    'web reaches api',
    async () => (await callThrough(web.gateway.address('outbound').port, 'api', '/warm')).status === 200,
  );
}, 30_000);

afterAll(async () => {
  await web?.close();
  await api?.close();
  await registry?.close();
  await app?.close();
  removeCertFiles();
});

describe('the hop between two sidecars', () => {
  it('runs on connections with TCP_NODELAY on the inbound side', () => {
    expect(accepted.length).toBeGreaterThan(0);
    for (const socket of accepted) expect(noDelayOf(socket)).toBe(true);
  });

  it('keeps idle connections from peers a minute, and says so to their pools', async () => {
    // A mesh peer's request, as the outbound sidecar sends it (its pool keeps the connection 2 s
    // less than the hint; the edge listener's 5 s had it closed and made again after 3 s idle).
    const files = pki.files.web!;
    const peer = new Agent({
      // HTTP/1.1, as sidecars speak to each other by default (`protocol: http1`).
      allowH2: false,
      connect: {
        ca: readFileSync(files.ca),
        cert: readFileSync(files.cert),
        key: readFileSync(files.key),
        checkServerIdentity: () => undefined,
      },
    });
    try {
      const res = await request(`https://127.0.0.1:${api.gateway.address('inbound').port}/keep`, {
        dispatcher: peer,
        headers: { host: 'api' },
      });
      await res.body.dump();
      expect(res.statusCode).toBe(200);
      expect(res.headers['keep-alive']).toBe('timeout=60');
    } finally {
      await peer.close();
    }
  });

  it('sends the peer no X-Forwarded-* of its own; the peer sends its application its own', async () => {
    const before = app.requests.length;
    const res = await callThrough(web.gateway.address('outbound').port, 'api', '/headers', {
      'x-forwarded-for': '203.0.113.9',
      'x-forwarded-host': 'spoofed.example',
    });
    expect(res.status).toBe(200);
    const onHop = arrived.at(-1)!;
    expect(onHop.url).toBe('/headers');
    expect(onHop.headers['x-forwarded-for']).toBeUndefined();
    expect(onHop.headers['x-forwarded-proto']).toBeUndefined();
    expect(onHop.headers['x-forwarded-host']).toBeUndefined();
    // What the hop still carries: the Host, the request id and the trace context.
    expect(onHop.headers.host).toBe('api');
    expect(onHop.headers['x-request-id']).toBeTruthy();
    expect(onHop.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    const seen = app.requests.slice(before);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(seen[0]!.headers['x-forwarded-proto']).toBe('https');
    expect(seen[0]!.headers['x-forwarded-host']).toBe('api');
    expect(seen[0]!.headers['x-forwarded-client-cert']).toContain(`URI=${meshId('web')}`);
  });
});
