/**
 * The connection between two sidecars, as the wire sees it: the inbound listener's accepted
 * sockets have TCP_NODELAY (Nagle's algorithm would hold a write behind an unacknowledged one
 * until the peer's delayed ACK, 40 ms or more). Real sidecars, registry and application;
 * certificates made in the test.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
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
});
