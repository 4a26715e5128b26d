/**
 * The admin API shows configuration in several views; none of them may show a secret that
 * /v1/config hides: header-match values under secret names, credentials in endpoint, collector
 * and JWKS URLs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { type JwksServer, startJwksServer } from '../helpers/jwks-server.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let up: TestUpstream;
let jwks: JwksServer;
let gw: TestGateway;

const SECRETS = [
  'Bearer s3cr3t-token',
  'session=c00kie',
  'k-12345',
  'hunter2',
  'jwks-pass',
  'otel-pass',
  'trace-ui-pass',
];

beforeAll(async () => {
  up = await startUpstream();
  jwks = await startJwksServer();
  const withUser = (url: string, password: string) => url.replace('http://', `http://user:${password}@`);
  gw = await startGateway({
    telemetry: {
      tracing: {
        endpoint: 'http://otel:otel-pass@127.0.0.1:4318',
        uiUrl: 'http://ui:trace-ui-pass@127.0.0.1:16686/trace/{traceId}',
      },
    },
    auth: {
      providers: {
        idp: { issuer: 'https://idp.test', algorithms: ['RS256'], jwksUri: withUser(jwks.url, 'jwks-pass') },
      },
    },
    upstreams: { main: { endpoints: [withUser(up.url, 'hunter2')] } },
    routes: [
      {
        name: 'internal',
        match: {
          path: '/internal',
          headers: {
            authorization: 'Bearer s3cr3t-token',
            cookie: 'session=c00kie',
            'x-api-key': 'k-12345',
            'x-tenant': 'acme',
          },
        },
        upstream: 'main',
      },
    ],
  });
});

afterAll(async () => {
  await gw?.close();
  await jwks?.close();
  await up?.close();
});

describe('the admin API', () => {
  it.each([
    '/v1/config',
    '/v1/routes',
    '/v1/upstreams',
    '/v1/auth',
    '/v1/config/errors',
    '/v1/certs',
    '/v1/status',
    '/v1/stats/routes',
    '/v1/decisions/recent',
  ])('%s shows no secret', async (path) => {
    const res = await fetch(`${gw.adminUrl}${path}`);
    expect(res.status).toBe(200);
    const text = await res.text();
    for (const secret of SECRETS) expect(text, `${path} shows ${secret}`).not.toContain(secret);
  });

  it('/v1/routes redacts header-match values under secret names the way /v1/config does', async () => {
    const routes = (await (await fetch(`${gw.adminUrl}/v1/routes`)).json()) as {
      routes: { name: string; match: { headers?: Record<string, string> } }[];
    };
    const config = (await (await fetch(`${gw.adminUrl}/v1/config`)).json()) as {
      config: { routes: { name: string; match: { headers?: Record<string, string> } }[] };
    };
    const shown = routes.routes.find((r) => r.name === 'internal')!.match.headers;
    expect(shown).toEqual({
      authorization: '[redacted]',
      cookie: '[redacted]',
      'x-api-key': '[redacted]',
      'x-tenant': 'acme',
    });
    expect(config.config.routes.find((r) => r.name === 'internal')!.match.headers).toEqual(shown);
  });

  it('/v1/upstreams and /v1/auth keep the URLs, without their credentials', async () => {
    const upstreams = await (await fetch(`${gw.adminUrl}/v1/upstreams`)).text();
    expect(upstreams).toContain(`"http://127.0.0.1:${up.port}"`);
    const auth = (await (await fetch(`${gw.adminUrl}/v1/auth`)).json()) as {
      providers: { jwksUri: string }[];
    };
    expect(auth.providers[0]!.jwksUri).toMatch(/^http:\/\/\[redacted\]@127\.0\.0\.1:\d+/);
  });
});
