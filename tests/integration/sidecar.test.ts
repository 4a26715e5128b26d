/**
 * Sidecar mode with real parts: a gateway running the registry (registration API over mTLS),
 * sidecars in front of real local applications, certificates made in the test. A request from an
 * application goes out through its sidecar's outbound listener, chosen by Host, to a destination
 * sidecar found in the registry, over mTLS with the destination's SPIFFE ID verified; the
 * destination's inbound listener checks the caller's identity against its allow-list and forwards
 * to its application on loopback. Registration waits for the application's readiness, follows it,
 * and at shutdown drains and deregisters before the listeners stop.
 */
import { readFileSync } from 'node:fs';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeCertFiles } from '../helpers/certs.ts';
import { startGateway, type TestGateway, writeConfig } from '../helpers/gateway.ts';
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
import { metricValue, scrape } from '../helpers/tls-client.ts';
import { until } from '../helpers/until.ts';

const ROGUE_TOKEN_ENV = 'PEREGRINE_SIDECAR_TEST_ROGUE_TOKEN';

let pki: MeshPki;
let registry: TestGateway;
let registryUrl: string;
let apiApp: TestApp;
let api: TestGateway;
let web: TestGateway;
const opened: TestGateway[] = [];

/** A mesh peer's connection to an inbound listener, with its certificate (the SVID has no host name). */
function peerAgent(files: { cert: string; key: string; ca: string }): Agent {
  return new Agent({
    connect: {
      ca: readFileSync(files.ca),
      cert: readFileSync(files.cert),
      key: readFileSync(files.key),
      checkServerIdentity: () => undefined,
    },
  });
}

function apiConfig(allow: string[], ttl = '3s'): Parameters<typeof startGateway>[0] {
  const c = sidecarConfig({
    service: 'api',
    files: pki.files.api!,
    registry: registryUrl,
    app: apiApp.url,
    allow,
  });
  return { ...c, sidecar: { ...c.sidecar!, registry: { ...c.sidecar!.registry!, ttl } } };
}

function port(g: TestGateway, listener: string): number {
  return g.gateway.address(listener).port;
}

async function registered(service: string): Promise<{ id: string; state: string; port: number }[]> {
  const store = registry.gateway.registry!.store;
  return store.list(service).map((i) => ({ id: i.id, state: i.state, port: i.port }));
}

async function start(
  config: Parameters<typeof startGateway>[0],
  opts: Parameters<typeof startGateway>[1] = {},
): Promise<TestGateway> {
  const g = await startGateway(config, opts);
  opened.push(g);
  return g;
}

beforeAll(async () => {
  pki = await createMeshPki(['api', 'web', 'other']);
  process.env[ROGUE_TOKEN_ENV] = 'rogue-registry-token-0123456789';
  registry = await startGateway(
    registryGatewayConfig(pki, { tokens: [{ name: 'rogue', env: ROGUE_TOKEN_ENV, services: ['rogue'] }] }),
  );
  registryUrl = `https://127.0.0.1:${registry.gateway.registryAddress.port}`;
  apiApp = await startApp(false);
  api = await start(apiConfig([meshId('web')]), { asFile: true });
  web = await start(
    sidecarConfig({ service: 'web', files: pki.files.web!, registry: registryUrl, services: ['api'] }),
  );
}, 30_000);

afterAll(async () => {
  for (const g of opened.reverse()) await g.close();
  await registry?.close();
  await apiApp?.close();
  removeCertFiles();
});

describe('registration', () => {
  it('waits for the application to be ready, then registers the inbound port', async () => {
    // The application answers 503 on its readiness path: nothing registered, the sidecar not ready.
    await new Promise((r) => setTimeout(r, 300));
    expect(await registered('api')).toEqual([]);
    expect((await fetch(`${api.adminUrl}/readyz`)).status).toBe(503);
    apiApp.ready = true;
    await until('api registered', async () => (await registered('api')).length === 1);
    expect(await registered('api')).toMatchObject([{ state: 'active', port: port(api, 'inbound') }]);
    await until('api sidecar ready', async () => (await fetch(`${api.adminUrl}/readyz`)).status === 200);
    const view = (await (await fetch(`${api.adminUrl}/v1/sidecar`)).json()) as Record<string, unknown>;
    expect(view).toMatchObject({
      service: 'api',
      ready: true,
      registration: { phase: 'registered', state: 'active' },
    });
  });

  it('shows the derived listeners, routes and upstreams in /v1/config', async () => {
    const { config } = (await (await fetch(`${web.adminUrl}/v1/config`)).json()) as {
      config: { mode: string; listeners: { name: string }[]; routes: { name: string }[]; upstreams: object };
    };
    expect(config.mode).toBe('sidecar');
    expect(config.listeners.map((l) => l.name)).toEqual(['outbound']);
    expect(config.routes.map((r) => r.name)).toEqual(['outbound.api', 'outbound.api.mesh']);
    expect(Object.keys(config.upstreams)).toEqual(['outbound.api']);
  });
});

describe('a request through the mesh', () => {
  it('goes out by Host, over mTLS to the destination sidecar, and in to its application', async () => {
    await until(
      'web sees api',
      async () => (await callThrough(port(web, 'outbound'), 'api', '/orders/1')).status === 200,
    );
    const before = apiApp.requests.length;
    const res = await callThrough(port(web, 'outbound'), 'api.mesh', '/orders/2?x=1');
    expect(res.status).toBe(200);
    const seen = apiApp.requests.slice(before);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.url).toBe('/orders/2?x=1');
    expect(seen[0]!.headers.host).toBe('api.mesh');
    // The caller's verified identity reaches the application, never a header the caller set.
    expect(seen[0]!.headers['x-forwarded-client-cert']).toContain(`URI=${meshId('web')}`);
  });

  it('counts the request on both sides with its direction and services', async () => {
    const outbound = await scrape(web.adminUrl);
    expect(
      metricValue(outbound, 'peregrine_mesh_requests_total', {
        direction: 'outbound',
        source: 'web',
        destination: 'api',
        status: '200',
      }),
    ).toBeGreaterThanOrEqual(2);
    const inbound = await scrape(api.adminUrl);
    expect(
      metricValue(inbound, 'peregrine_mesh_requests_total', {
        direction: 'inbound',
        source: 'web',
        destination: 'api',
        status: '200',
      }),
    ).toBeGreaterThanOrEqual(2);
    expect(
      metricValue(inbound, 'peregrine_mesh_request_duration_seconds_count', {
        direction: 'inbound',
        source: 'web',
      }),
    ).toBeGreaterThanOrEqual(2);
  });

  it('answers 404 for a service the application may not call', async () => {
    const res = await callThrough(port(web, 'outbound'), 'billing', '/');
    expect(res.status).toBe(404);
    expect(res.headers['x-peregrine-reason']).toBe('ROUTE_NOT_FOUND');
  });
});

describe('refusals', () => {
  it('refuses a mesh caller not on the allow-list with 403', async () => {
    const other = await start(
      sidecarConfig({ service: 'other', files: pki.files.other!, registry: registryUrl, services: ['api'] }),
    );
    await until(
      'other sees api',
      async () => (await callThrough(port(other, 'outbound'), 'api', '/')).status !== 503,
    );
    const denied = { direction: 'inbound', source: 'other', destination: 'api', status: '403' };
    const counted = metricValue(await scrape(api.adminUrl), 'peregrine_mesh_requests_total', denied) ?? 0;
    const before = apiApp.requests.length;
    const res = await callThrough(port(other, 'outbound'), 'api', '/orders/3');
    expect(res.status).toBe(403);
    expect(res.headers['x-peregrine-reason']).toBe('IDENTITY_DENIED');
    expect(apiApp.requests.length).toBe(before);
    expect(metricValue(await scrape(api.adminUrl), 'peregrine_mesh_requests_total', denied)).toBe(
      counted + 1,
    );
  });

  it('a reload widens the allow-list; a change that needs a restart says so', async () => {
    const other = opened.find((g) => g.gateway.sidecar?.config.service === 'other')!;
    writeConfig(api.configFile!, apiConfig([meshId('web'), meshId('other')], '4s'));
    expect(await api.gateway.reload('test')).toMatchObject({ ok: true, changed: true });
    const res = await callThrough(port(other, 'outbound'), 'api', '/orders/5');
    expect(res.status).toBe(200);
    expect(
      api.logs.lines().find((l) => String(l.msg).startsWith('static configuration changed')),
    ).toMatchObject({ sections: ['sidecar'] });
  });

  it('refuses a sidecar whose certificate another CA issued, before any request', async () => {
    const files = await pki.issue('rogue', pki.otherCa);
    const rogue = await start(
      sidecarConfig({
        service: 'rogue',
        files,
        registry: registryUrl,
        services: ['api'],
        tokenEnv: ROGUE_TOKEN_ENV,
      }),
    );
    const failuresBefore =
      metricValue(await scrape(api.adminUrl), 'peregrine_tls_client_cert_verification_failures_total', {
        listener: 'inbound',
      }) ?? 0;
    let res = await callThrough(port(rogue, 'outbound'), 'api', '/orders/4');
    // It follows the registry with its token, so it knows where api is, and is refused there.
    await until('rogue sees api', async () => {
      res = await callThrough(port(rogue, 'outbound'), 'api', '/orders/4');
      return res.status !== 503;
    });
    // Node's TLS server closes the connection without an alert when a client certificate fails:
    // the caller sees its connection reset after the handshake, and the application nothing.
    expect(res.status).toBe(502);
    expect(res.headers['x-peregrine-reason']).toBe('UPSTREAM_RESET');
    expect(apiApp.requests.some((r) => r.url === '/orders/4')).toBe(false);
    const failures = metricValue(
      await scrape(api.adminUrl),
      'peregrine_tls_client_cert_verification_failures_total',
      { listener: 'inbound' },
    );
    expect(failures).toBeGreaterThan(failuresBefore);
  });
});

describe('following the application and shutting down', () => {
  it('drains the registration while the application is not ready, and reactivates it', async () => {
    apiApp.ready = false;
    await until('api draining', async () => (await registered('api'))[0]?.state === 'draining');
    expect((await fetch(`${api.adminUrl}/readyz`)).status).toBe(503);
    apiApp.ready = true;
    await until('api active', async () => (await registered('api'))[0]?.state === 'active');
  });

  it('at shutdown drains, serves while peers notice, deregisters, then stops', async () => {
    const peer = peerAgent(pki.files.web!);
    const inbound = `https://127.0.0.1:${port(api, 'inbound')}`;
    const closing = api.close();
    await until('api draining', async () => (await registered('api'))[0]?.state === 'draining', 2000);
    // A peer that has not noticed yet is still served during the drain delay.
    const late = await request(`${inbound}/late`, { dispatcher: peer });
    expect(late.statusCode).toBe(200);
    await late.body.dump();
    await closing;
    expect(await registered('api')).toEqual([]);
    await peer.close();
  });
});
