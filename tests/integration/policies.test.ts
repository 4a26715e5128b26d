/**
 * Named route policies end to end: a policy defined once under `policies` and listed by several
 * routes runs like the inline form, the chain shows on /v1/routes, spans report the policy result,
 * and a reload that changes which policies a route lists takes effect at once.
 */
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConfigInput } from '../../src/config/schema.ts';
import { startGateway, type TestGateway, writeConfig } from '../helpers/gateway.ts';
import { type JwksServer, startJwksServer } from '../helpers/jwks-server.ts';
import { AUDIENCE, createTestKey, ISSUER, jwksOf, mintToken, type TestKey } from '../helpers/tokens.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let up: TestUpstream;
let jwks: JwksServer;
let key: TestKey;
let gw: TestGateway;
const spans = new InMemorySpanExporter();

function config(routes: ConfigInput['routes']): Partial<ConfigInput> {
  return {
    telemetry: { tracing: { sampleRatio: 1 } },
    auth: {
      providers: {
        idp: { issuer: ISSUER, jwksUri: jwks.url, algorithms: ['ES256'], audiences: [AUDIENCE] },
      },
    },
    policies: {
      readers: { kind: 'jwt', scopes: ['orders:read'], forwardClaims: { 'x-user-id': 'sub' } },
    },
    upstreams: { orders: { endpoints: [up.url] } },
    routes,
  } as Partial<ConfigInput>;
}

const ROUTES: ConfigInput['routes'] = [
  { name: 'orders', match: { path: '/orders' }, upstream: 'orders', policies: ['readers'] },
  { name: 'reports', match: { path: '/reports' }, upstream: 'orders', policies: ['readers'] },
  { name: 'open', match: { path: '/open' }, upstream: 'orders' },
];

beforeAll(async () => {
  up = await startUpstream();
  key = await createTestKey('ES256');
  jwks = await startJwksServer(jwksOf(key));
  gw = await startGateway(config(ROUTES), { spanProcessor: new SimpleSpanProcessor(spans), asFile: true });
});

afterAll(async () => {
  await gw?.close();
  await jwks?.close();
  await up?.close();
});

const last = () => up.requests[up.requests.length - 1]!;

/**
 * The policy result on a request's SERVER span. The span ends when the response has been written,
 * which can be after the client has read the headers: wait for it (an exact lookup, no sleep).
 */
async function policyResultOf(requestId: string | null): Promise<unknown> {
  const find = () =>
    spans.getFinishedSpans().find((s) => s.kind === 1 && s.attributes['peregrine.request_id'] === requestId);
  for (let waited = 0; find() === undefined; waited += 10) {
    if (waited > 5000) throw new Error(`no SERVER span for request ${requestId}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return find()!.attributes['peregrine.policy.result'];
}

describe('named policies', () => {
  it('a policy listed by two routes guards both, as the inline form does', async () => {
    const token = await mintToken(key, { claims: { scope: 'orders:read' }, subject: 'alice' });
    for (const path of ['/orders/1', '/reports/q1']) {
      const anonymous = await fetch(`${gw.url}${path}`);
      expect(anonymous.status).toBe(401);
      expect(anonymous.headers.get('x-peregrine-reason')).toBe('AUTH_REQUIRED');
      expect(await policyResultOf(anonymous.headers.get('x-request-id'))).toBe('deny:AUTH_REQUIRED');

      const res = await fetch(`${gw.url}${path}`, {
        headers: { authorization: `Bearer ${token}`, 'x-user-id': 'mallory' },
      });
      expect(res.status).toBe(200);
      expect(await policyResultOf(res.headers.get('x-request-id'))).toBe('allow');
      // The policy's claim header replaces the client's; the token stays at the gateway.
      expect(last().headers['x-user-id']).toBe('alice');
      expect(last().headers.authorization).toBeUndefined();
    }
    const open = await fetch(`${gw.url}/open`);
    expect(open.status).toBe(200);
    expect(await policyResultOf(open.headers.get('x-request-id'))).toBeUndefined();
  });

  it('/v1/routes shows each route chain in order', async () => {
    const body = (await (await fetch(`${gw.adminUrl}/v1/routes`)).json()) as {
      routes: { name: string; policies: unknown[] }[];
    };
    const chains = Object.fromEntries(body.routes.map((r) => [r.name, r.policies]));
    expect(chains).toEqual({
      orders: [{ name: 'readers', kind: 'jwt' }],
      reports: [{ name: 'readers', kind: 'jwt' }],
      open: [],
    });
  });

  it('a reload that takes a policy off a route takes effect at once', async () => {
    writeConfig(gw.configFile!, config([{ ...ROUTES[0]!, policies: undefined }, ROUTES[1]!, ROUTES[2]!]));
    const result = await gw.gateway.store.reload('test');
    expect(result.ok).toBe(true);
    expect((await fetch(`${gw.url}/orders/1`)).status).toBe(200);
    expect((await fetch(`${gw.url}/reports/q1`)).status).toBe(401);
  });
});
