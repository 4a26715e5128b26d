/**
 * The registration API of a real gateway, over real TLS with client certificates: who may register
 * what (mTLS identities, scoped bearer tokens), the address policy, input validation, leases
 * through their life (register, renew, drain, deregister), the watch stream, rate bounds, and that
 * every refusal is a problem+json answer that is counted.
 */
import { writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CertFiles,
  createTestPki,
  type IssuedCert,
  removeCertFiles,
  type TestPki,
  writeCertFiles,
} from '../helpers/certs.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { type ClientTls, httpsFetch, metricValue, scrape } from '../helpers/tls-client.ts';

const TOKEN = 'payments-deployer-token-0123456789';
const FILE_TOKEN = 'users-token-from-a-file-0123456789';
const FLOOD_TOKEN = 'a-token-that-sends-too-much-0123456789';
const TOKEN_ENV = 'PEREGRINE_TEST_REGISTRY_TOKEN';
const SERVICE_ID = (service: string) => `spiffe://prod.example/ns/prod/sa/${service}`;

let pki: TestPki;
let files: CertFiles;
let gw: TestGateway;
let port: number;
let paymentsCert: IssuedCert;
let strangerCert: IssuedCert;
const spans = new InMemorySpanExporter();

beforeAll(async () => {
  pki = await createTestPki();
  files = writeCertFiles(pki.server, pki.ca.cert);
  [paymentsCert, strangerCert] = await Promise.all([
    pki.ca.client(SERVICE_ID('payments')),
    pki.ca.client('spiffe://other.example/ns/prod/sa/payments'),
  ]);
  const tokenFile = join(files.dir, 'users.token');
  writeFileSync(tokenFile, `${FILE_TOKEN}\n`);
  process.env[TOKEN_ENV] = TOKEN;
  process.env.PEREGRINE_TEST_FLOOD_TOKEN = FLOOD_TOKEN;
  gw = await startGateway(
    {
      // debug: refusals are logged there, with their request id.
      telemetry: { logLevel: 'debug', tracing: { sampleRatio: 1 } },
      registry: {
        gatewayId: 'gw-test',
        listener: {
          address: '127.0.0.1:0',
          tls: { cert: files.cert, key: files.key, clientAuth: 'optional', clientCa: files.ca },
        },
        credentials: {
          identities: [{ spiffe: 'spiffe://prod.example/ns/*/sa/{service}' }],
          tokens: [
            { name: 'deployer', env: TOKEN_ENV, services: ['payments', 'orders-*'] },
            { name: 'users', file: tokenFile, services: ['users'] },
            { name: 'flood', env: 'PEREGRINE_TEST_FLOOD_TOKEN', services: ['flood'] },
          ],
        },
        addresses: { deny: ['10.66.0.0/16'] },
        limits: { maxInstancesPerService: 5, maxMetadataBytes: 256 },
        rateLimit: { perSecond: 20, burst: 60 },
      },
    },
    { spanProcessor: new SimpleSpanProcessor(spans) },
  );
  port = gw.gateway.registryAddress.port;
}, 30_000);

afterAll(async () => {
  await gw?.close();
  delete process.env[TOKEN_ENV];
  removeCertFiles();
});

const tls = (cert?: IssuedCert): ClientTls => ({
  ca: pki.ca.cert,
  ...(cert ? { cert: cert.cert, key: cert.key } : {}),
});

/** The parts of API answers the tests read. */
interface InstanceJson {
  id: string;
  address: string;
  state: string;
  expiresAt: string;
  lastHeartbeat: string;
}
interface ApiJson {
  status?: number;
  code?: string;
  detail?: string;
  traceId?: string;
  requestId?: string;
  errors?: { field: string }[];
  outcome?: string;
  instance: InstanceJson;
  instances: InstanceJson[];
  services: { service: string }[];
}
interface WatchJson {
  type: string;
  cause: string;
  instance: InstanceJson;
  instances: InstanceJson[];
}

interface Call {
  method?: string;
  token?: string;
  cert?: IssuedCert;
  body?: unknown;
  raw?: string;
  headers?: Record<string, string>;
}

async function call(path: string, c: Call = {}) {
  const headers: Record<string, string> = { ...c.headers };
  if (c.token) headers.authorization = `Bearer ${c.token}`;
  const body = c.raw ?? (c.body === undefined ? undefined : JSON.stringify(c.body));
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await httpsFetch(port, path, tls(c.cert), { method: c.method ?? 'GET', headers, body });
  const json = res.body ? (JSON.parse(res.body) as ApiJson) : undefined;
  return { status: res.status, headers: res.headers, json };
}

const put = (service: string, id: string, body: unknown, c: Call = { token: TOKEN }) =>
  call(`/v1/services/${service}/instances/${id}`, { ...c, method: 'PUT', body });

const instance = { address: '10.1.0.7', port: 8080 };

async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricValue(await scrape(gw.adminUrl), name, labels) ?? 0;
}

function expectProblem(r: Awaited<ReturnType<typeof call>>, status: number, code: string): void {
  expect(r.status, JSON.stringify(r.json)).toBe(status);
  expect(r.headers['content-type']).toBe('application/problem+json');
  expect(r.headers['x-peregrine-reason']).toBe(code);
  expect(r.json).toMatchObject({ status, code });
  expect(r.json?.traceId).toMatch(/^[0-9a-f]{32}$/);
}

describe('who may register what', () => {
  it('no credential: 401 with WWW-Authenticate, counted', async () => {
    const before = await metric('peregrine_registry_denials_total', { reason: 'no_credential' });
    const r = await put('payments', 'p-1', instance, {});
    expectProblem(r, 401, 'AUTH_REQUIRED');
    expect(r.headers['www-authenticate']).toBe('Bearer realm="peregrine-registry"');
    // Reads need a credential too: the registry shows the topology of the services behind it.
    expectProblem(await call('/v1/services'), 401, 'AUTH_REQUIRED');
    expect(await metric('peregrine_registry_denials_total', { reason: 'no_credential' })).toBe(before + 2);
  });

  it('an unknown token: 401, counted; the token is never echoed or logged', async () => {
    const before = await metric('peregrine_registry_denials_total', { reason: 'bad_credential' });
    const r = await put('payments', 'p-1', instance, { token: 'not-a-registry-token-at-all-000' });
    expectProblem(r, 401, 'INVALID_CREDENTIAL');
    expect(JSON.stringify(r.json)).not.toContain('not-a-registry-token');
    expect(await metric('peregrine_registry_denials_total', { reason: 'bad_credential' })).toBe(before + 1);
    expect(gw.logs.text()).not.toContain(TOKEN);
    expect(gw.logs.text()).not.toContain('not-a-registry-token');
  });

  it('a token registers only the services it names: others are 403 for every change', async () => {
    const before = await metric('peregrine_registry_denials_total', { reason: 'service_not_allowed' });
    expect((await put('orders-eu', 'o-1', instance)).status).toBe(201);
    expectProblem(await put('users', 'u-1', instance), 403, 'FORBIDDEN');
    expectProblem(
      await call('/v1/services/users/instances/u-1/heartbeat', { method: 'POST', token: TOKEN }),
      403,
      'FORBIDDEN',
    );
    expectProblem(
      await call('/v1/services/users/instances/u-1', { method: 'DELETE', token: TOKEN }),
      403,
      'FORBIDDEN',
    );
    // The token from the file may register users, and nothing else.
    expect((await put('users', 'u-1', instance, { token: FILE_TOKEN })).status).toBe(201);
    expectProblem(await put('payments', 'p-9', instance, { token: FILE_TOKEN }), 403, 'FORBIDDEN');
    expectProblem(
      await call('/v1/services/orders-eu/instances/o-1', { method: 'DELETE', token: FILE_TOKEN }),
      403,
      'FORBIDDEN',
    );
    expect(await metric('peregrine_registry_denials_total', { reason: 'service_not_allowed' })).toBe(
      before + 5,
    );
  });

  it('an mTLS identity registers the service its SPIFFE ID names, and only that one', async () => {
    const r = await put('payments', 'mtls-1', instance, { cert: paymentsCert });
    expect(r.status).toBe(201);
    expectProblem(await put('orders-eu', 'mtls-1', instance, { cert: paymentsCert }), 403, 'FORBIDDEN');
    // A verified certificate whose identity no pattern names is not a registry credential.
    expectProblem(
      await put('payments', 'mtls-2', instance, { cert: strangerCert }),
      401,
      'INVALID_CREDENTIAL',
    );
    const del = await call('/v1/services/payments/instances/mtls-1', {
      method: 'DELETE',
      cert: paymentsCert,
    });
    expect(del.status).toBe(204);
  });

  it('a certificate that does not verify is refused at the handshake, never treated as anonymous', async () => {
    const err = await put('payments', 'x', instance, { cert: pki.foreign }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(
      await metric('peregrine_tls_client_cert_verification_failures_total', { listener: 'registry' }),
    ).toBeGreaterThan(0);
  });

  it('requests are rate-bounded per credential: 429 with Retry-After, counted; others unaffected', async () => {
    const before = await metric('peregrine_registry_denials_total', { reason: 'rate_limited' });
    // 90 at once empty the bucket (60) faster than it refills (20/s), unless a loaded machine
    // spreads them over more than 1.5 s: then another 90, until one is refused.
    const statuses: Awaited<ReturnType<typeof call>>[] = [];
    for (let round = 0; round < 10 && !statuses.some((r) => r.status === 429); round++)
      statuses.push(
        ...(await Promise.all(
          Array.from({ length: 90 }, () => call('/v1/services', { token: FLOOD_TOKEN })),
        )),
      );
    const limited = statuses.filter((r) => r.status === 429);
    expect(limited.length).toBeGreaterThan(0);
    expect(statuses.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(60);
    expectProblem(limited[0]!, 429, 'REGISTRY_RATE_LIMITED');
    expect(Number(limited[0]!.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(await metric('peregrine_registry_denials_total', { reason: 'rate_limited' })).toBe(
      before + limited.length,
    );
    expect((await call('/v1/services', { token: TOKEN })).status).toBe(200);
  });
});

describe('addresses', () => {
  const forbidden = [
    '169.254.169.254',
    '::ffff:169.254.169.254',
    '::ffff:a9fe:a9fe',
    'fe80::1',
    '127.0.0.1',
    '::1',
    '0.0.0.0',
    '::',
    '224.0.0.1',
    '255.255.255.255',
    '10.66.1.2',
    'metadata.google.internal',
    '0177.0.0.1',
    'fe80::1%eth0',
  ];

  it.each(forbidden)('%s → 400 ADDRESS_NOT_ALLOWED, counted', async (address) => {
    const before = await metric('peregrine_registry_denials_total', { reason: 'address_not_allowed' });
    const r = await put('payments', 'addr', { address, port: 8080 });
    expectProblem(r, 400, 'ADDRESS_NOT_ALLOWED');
    expect(await metric('peregrine_registry_denials_total', { reason: 'address_not_allowed' })).toBe(
      before + 1,
    );
  });

  it('without an address the request source is registered: loopback here, so refused by default', async () => {
    const r = await put('payments', 'addr', { port: 8080 });
    expectProblem(r, 400, 'ADDRESS_NOT_ALLOWED');
    expect(r.json?.detail).toContain('127.0.0.1 is loopback');
  });

  it('an IPv6 address is stored in canonical form', async () => {
    const r = await put('payments', 'v6', { address: '2001:DB8:0:0::7', port: 8080 });
    expect(r.status).toBe(201);
    expect(r.json?.instance.address).toBe('2001:db8::7');
    await call('/v1/services/payments/instances/v6', { method: 'DELETE', token: TOKEN });
  });
});

describe('bad input: 400 problem+json naming the field', () => {
  const cases: [string, unknown, string][] = [
    ['port 0', { address: '10.1.0.7', port: 0 }, 'port'],
    ['port 65536', { address: '10.1.0.7', port: 65536 }, 'port'],
    ['port as text', { address: '10.1.0.7', port: '8080' }, 'port'],
    ['no port', { address: '10.1.0.7' }, 'port'],
    ['ttl below the minimum', { ...instance, ttl: '100ms' }, 'ttl'],
    ['ttl above the maximum', { ...instance, ttl: '1h' }, 'ttl'],
    ['ttl not a duration', { ...instance, ttl: 'soon' }, 'ttl'],
    ['metadata too large', { ...instance, metadata: { blob: 'x'.repeat(300) } }, 'metadata'],
    ['metadata not strings', { ...instance, metadata: { n: 1 } }, 'metadata.n'],
    ['weight 0', { ...instance, weight: 0 }, 'weight'],
    ['unknown protocol', { ...instance, protocol: 'gopher' }, 'protocol'],
    ['unknown field', { ...instance, owner: 'me' }, '(body)'],
  ];

  it.each(cases)('%s', async (_what, body, field) => {
    const before = await metric('peregrine_registry_denials_total', { reason: 'invalid' });
    const r = await put('payments', 'bad', body);
    expectProblem(r, 400, 'INVALID_REGISTRATION');
    expect(r.json?.errors?.map((e) => e.field)).toContain(field);
    expect(await metric('peregrine_registry_denials_total', { reason: 'invalid' })).toBe(before + 1);
  });

  it('a body over 128 KiB: 413, and the connection closes', async () => {
    const raw = JSON.stringify({ ...instance, metadata: { big: 'x'.repeat(200 * 1024) } });
    const r = await call('/v1/services/payments/instances/big', { method: 'PUT', token: TOKEN, raw });
    expectProblem(r, 413, 'PAYLOAD_TOO_LARGE');
    expect(r.headers.connection).toBe('close');
  });

  it('malformed JSON and an empty body', async () => {
    expectProblem(
      await call('/v1/services/payments/instances/bad', { method: 'PUT', token: TOKEN, raw: '{"port":' }),
      400,
      'INVALID_REGISTRATION',
    );
    expectProblem(
      await call('/v1/services/payments/instances/bad', { method: 'PUT', token: TOKEN }),
      400,
      'INVALID_REGISTRATION',
    );
  });

  it.each([
    ['/v1/services/Payments/instances/p-1', 'service'],
    ['/v1/services/pay_ments!/instances/p-1', 'service'],
    [`/v1/services/payments/instances/${'x'.repeat(129)}`, 'id'],
    ['/v1/services/payments/instances/-bad-', 'id'],
    ['/v1/services/payments/instances/a%2Fb', 'id'],
  ])('bad names in the path: %s', async (path, what) => {
    const r = await call(path, { method: 'PUT', token: TOKEN, body: instance });
    expectProblem(r, 400, 'INVALID_REGISTRATION');
    expect(r.json?.detail).toContain(`invalid ${what}`);
  });

  it('too many instances for a service: 400, counted', async () => {
    for (let i = 0; i < 5; i++) expect((await put('orders-full', `o-${i}`, instance)).status).toBe(201);
    const r = await put('orders-full', 'o-5', instance);
    expectProblem(r, 400, 'TOO_MANY_INSTANCES');
    expect(await metric('peregrine_registry_denials_total', { reason: 'too_many_instances' })).toBe(1);
    // Renewing one that exists is still fine.
    expect((await put('orders-full', 'o-0', instance)).status).toBe(200);
  });

  it('unknown paths are 404, wrong methods 405 with Allow', async () => {
    expectProblem(await call('/v1/nothing', { token: TOKEN }), 404, 'ROUTE_NOT_FOUND');
    const r = await call('/v1/services/payments', { method: 'DELETE', token: TOKEN });
    expectProblem(r, 405, 'METHOD_NOT_ALLOWED');
    expect(r.headers.allow).toBe('GET');
  });
});

describe('leases through the API', () => {
  it('register, read, renew, drain, deregister', async () => {
    const body = {
      ...instance,
      zone: 'eu-1a',
      version: '2.1.0',
      weight: 3,
      metadata: { canary: 'false' },
      ttl: '20s',
    };
    const created = await put('payments', 'life-1', body);
    expect(created.status).toBe(201);
    expect(created.json).toMatchObject({
      outcome: 'created',
      heartbeatIntervalMs: 6666,
      instance: {
        service: 'payments',
        id: 'life-1',
        ...instance,
        zone: 'eu-1a',
        weight: 3,
        state: 'active',
        ttlMs: 20_000,
        registeredVia: 'gw-test',
      },
    });
    const expires = Date.parse(created.json!.instance.expiresAt);
    expect(expires - Date.parse(created.json!.instance.lastHeartbeat)).toBe(20_000);

    const again = await put('payments', 'life-1', body);
    expect(again.status).toBe(200);
    expect(again.json?.outcome).toBe('renewed');

    const one = await call('/v1/services/payments', { token: TOKEN });
    expect(one.status).toBe(200);
    const listed = one.json!.instances.find((i: { id: string }) => i.id === 'life-1');
    expect(listed).toMatchObject({
      state: 'active',
      registeredVia: 'gw-test',
      zone: 'eu-1a',
      metadata: { canary: 'false' },
    });
    expect(listed?.expiresAt).toBe(again.json!.instance.expiresAt);

    const all = await call('/v1/services', { token: FILE_TOKEN });
    expect(all.json).toMatchObject({ gatewayId: 'gw-test', store: { store: 'memory', synced: true } });
    expect(all.json!.services.map((s: { service: string }) => s.service)).toContain('payments');

    const beat = await call('/v1/services/payments/instances/life-1/heartbeat', {
      method: 'POST',
      token: TOKEN,
    });
    expect(beat.status).toBe(200);
    expect(beat.json?.outcome).toBe('renewed');
    // Prefer: return=minimal (what Peregrine's client sends): renewed, 204 and no body.
    const renewalsBefore = await metric('peregrine_registry_renewals_total', { service: 'payments' });
    const minimal = await call('/v1/services/payments/instances/life-1/heartbeat', {
      method: 'POST',
      token: TOKEN,
      headers: { prefer: 'respond-async, return=minimal' },
    });
    expect(minimal.status).toBe(204);
    expect(minimal.json).toBeUndefined();
    expect(minimal.headers['preference-applied']).toBe('return=minimal');
    expect(minimal.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    const after = (await call('/v1/services/payments/instances/life-1', { token: TOKEN })).json!.instance;
    expect(Date.parse(after.lastHeartbeat)).toBeGreaterThanOrEqual(
      Date.parse(beat.json!.instance.lastHeartbeat),
    );
    expect(await metric('peregrine_registry_renewals_total', { service: 'payments' })).toBe(
      renewalsBefore + 1,
    );
    // Any other preference gets the instance as before.
    const full = await call('/v1/services/payments/instances/life-1/heartbeat', {
      method: 'POST',
      token: TOKEN,
      headers: { prefer: 'return=representation' },
    });
    expect(full.status).toBe(200);
    expect(full.json?.instance.id).toBe('life-1');
    // Unknown leases are 404 either way (the client registers again).
    expectProblem(
      await call('/v1/services/payments/instances/nobody/heartbeat', {
        method: 'POST',
        token: TOKEN,
        headers: { prefer: 'return=minimal' },
      }),
      404,
      'INSTANCE_NOT_FOUND',
    );
    const unknown = await call('/v1/services/payments/instances/nobody/heartbeat', {
      method: 'POST',
      token: TOKEN,
    });
    expectProblem(unknown, 404, 'INSTANCE_NOT_FOUND');

    const drained = await call('/v1/services/payments/instances/life-1/drain', {
      method: 'POST',
      token: TOKEN,
    });
    expect(drained.json?.instance.state).toBe('draining');
    expect(
      (await call('/v1/services/payments/instances/life-1', { token: TOKEN })).json?.instance.state,
    ).toBe('draining');

    expect(
      (await call('/v1/services/payments/instances/life-1', { method: 'DELETE', token: TOKEN })).status,
    ).toBe(204);
    expectProblem(
      await call('/v1/services/payments/instances/life-1', { method: 'DELETE', token: TOKEN }),
      404,
      'INSTANCE_NOT_FOUND',
    );
    expectProblem(
      await call('/v1/services/payments/instances/life-1', { token: TOKEN }),
      404,
      'INSTANCE_NOT_FOUND',
    );

    expect(
      await metric('peregrine_registry_registrations_total', { service: 'payments', outcome: 'created' }),
    ).toBeGreaterThan(0);
    expect(await metric('peregrine_registry_renewals_total', { service: 'payments' })).toBeGreaterThanOrEqual(
      2,
    );
    expect(await metric('peregrine_registry_drains_total', { service: 'payments' })).toBeGreaterThanOrEqual(
      1,
    );
    expect(
      await metric('peregrine_registry_deregistrations_total', { service: 'payments' }),
    ).toBeGreaterThanOrEqual(1);
  });

  it('the instance gauge counts by service, state and source', async () => {
    await put('payments', 'g-1', instance);
    await put('payments', 'g-2', { ...instance, state: 'draining' });
    expect(
      await metric('peregrine_registry_instances', { service: 'payments', state: 'active', source: 'local' }),
    ).toBeGreaterThanOrEqual(1);
    expect(
      await metric('peregrine_registry_instances', {
        service: 'payments',
        state: 'draining',
        source: 'local',
      }),
    ).toBe(1);
    await call('/v1/services/payments/instances/g-2', { method: 'DELETE', token: TOKEN });
    expect(await metric('peregrine_registry_instances', { service: 'payments', state: 'draining' })).toBe(0);
  });

  it('each request is a server span named by its route, with the service and outcome', async () => {
    spans.reset();
    await put('payments', 'span-1', instance);
    const span = spans.getFinishedSpans().find((s) => s.name === 'PUT /v1/services/{service}/instances/{id}');
    expect(span).toBeDefined();
    expect(span!.attributes).toMatchObject({
      'peregrine.registry.service': 'payments',
      'peregrine.registry.instance': 'span-1',
      'peregrine.registry.outcome': 'created',
      'http.response.status_code': 201,
    });
  });

  it("a problem's requestId is the request's: in its x-request-id header, its span and its log line", async () => {
    spans.reset();
    const refused = await put('payments', 'rid-1', instance, {});
    expectProblem(refused, 401, 'AUTH_REQUIRED');
    const id = refused.headers['x-request-id'] as string;
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(refused.json?.requestId).toBe(id);
    const span = spans.getFinishedSpans().find((s) => s.attributes['peregrine.request_id'] === id);
    expect(span?.attributes['http.response.status_code']).toBe(401);
    const line = gw.logs
      .text()
      .split('\n')
      .find((l) => l.includes(id));
    expect(line).toContain('registry request refused');

    // A tame id from the client is kept, as on the data plane; anything else is replaced.
    const given = await call('/v1/services/payments/instances/nobody/heartbeat', {
      method: 'POST',
      token: TOKEN,
      headers: { 'x-request-id': 'client-req.42' },
    });
    expectProblem(given, 404, 'INSTANCE_NOT_FOUND');
    expect(given.headers['x-request-id']).toBe('client-req.42');
    expect(given.json?.requestId).toBe('client-req.42');
    const wild = await call('/v1/services/payments/instances/nobody/heartbeat', {
      method: 'POST',
      token: TOKEN,
      headers: { 'x-request-id': 'no spaces allowed' },
    });
    expect(wild.json?.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(wild.headers['x-request-id']).toBe(wild.json?.requestId);

    // Answers that succeed name their request too.
    const ok = await put('payments', 'rid-1', instance, {
      token: TOKEN,
      headers: { 'x-request-id': 'reg-1' },
    });
    expect(ok.status).toBe(201);
    expect(ok.headers['x-request-id']).toBe('reg-1');
    expect(gw.logs.text()).toMatch(
      /"requestId":"reg-1".*registry instance registered|registry instance registered.*"requestId":"reg-1"/,
    );
  });

  it('is served on its own listener only: the data plane and the admin API do not answer it', async () => {
    const data = await fetch(`${gw.url}/v1/services`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(data.status).toBe(404);
    const admin = await fetch(`${gw.adminUrl}/v1/services`);
    expect(admin.status).toBe(404);
  });

  it('the admin API shows the registry (store health and services), read-only', async () => {
    await put('payments', 'admin-1', instance);
    const res = await fetch(`${gw.adminUrl}/v1/registry`);
    const body = (await res.json()) as {
      gatewayId: string;
      store: { synced: boolean };
      api: string;
      services: { service: string }[];
    };
    expect(body.gatewayId).toBe('gw-test');
    expect(body.store.synced).toBe(true);
    expect(body.api).toBe(`127.0.0.1:${port}`);
    expect(body.services.map((s) => s.service)).toContain('payments');
  });
});

describe('watch', () => {
  it('streams a snapshot, then each change of the watched service', async () => {
    await put('orders-watch', 'w-0', instance);
    const events: { event: string; data: WatchJson }[] = [];
    const closed = new Promise<void>((resolve, reject) => {
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port,
          path: '/v1/watch?service=orders-watch',
          headers: { authorization: `Bearer ${TOKEN}` },
          ca: pki.ca.cert,
          servername: 'localhost',
          agent: false,
        },
        (res) => {
          expect(res.headers['content-type']).toBe('text/event-stream');
          let buffer = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            buffer += chunk;
            for (let i = buffer.indexOf('\n\n'); i >= 0; i = buffer.indexOf('\n\n')) {
              const block = buffer.slice(0, i);
              buffer = buffer.slice(i + 2);
              const event = /^event: (.*)$/m.exec(block)?.[1];
              const data = /^data: (.*)$/m.exec(block)?.[1];
              if (event && data) events.push({ event, data: JSON.parse(data) as WatchJson });
              if (events.length === 4) req.destroy();
            }
          });
        },
      );
      req.on('error', () => resolve());
      req.on('close', () => resolve());
      setTimeout(() => reject(new Error(`watch saw only ${JSON.stringify(events)}`)), 5000).unref();
      req.end();
    });
    await new Promise((r) => setTimeout(r, 200));
    expect(await metric('peregrine_registry_watch_streams')).toBe(1);
    await put('orders-watch', 'w-1', instance);
    await put('orders-other', 'x-1', instance);
    await call('/v1/services/orders-watch/instances/w-1/drain', { method: 'POST', token: TOKEN });
    await call('/v1/services/orders-watch/instances/w-1', { method: 'DELETE', token: TOKEN });
    await closed;
    expect(events.map((e) => e.event)).toEqual(['snapshot', 'change', 'change', 'change']);
    expect(events[0]!.data.instances.map((i: { id: string }) => i.id)).toEqual(['w-0']);
    expect(events.slice(1).map((e) => `${e.data.type}:${e.data.cause}:${e.data.instance.id}`)).toEqual([
      'upsert:registered:w-1',
      'upsert:drained:w-1',
      'remove:deregistered:w-1',
    ]);
    await new Promise((r) => setTimeout(r, 100));
    expect(await metric('peregrine_registry_watch_streams')).toBe(0);
  });
});
