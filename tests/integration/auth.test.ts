/**
 * JWT verification at the gateway's boundary: real JWKS server, real keys, real upstream.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { type JwksServer, startJwksServer } from '../helpers/jwks-server.ts';
import { rawRequest, statusCodes } from '../helpers/raw-http.ts';
import {
  AUDIENCE,
  algNoneToken,
  createTestKey,
  ISSUER,
  jwksOf,
  mintToken,
  type TestKey,
} from '../helpers/tokens.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let up: TestUpstream;
let jwks: JwksServer;
let key: TestKey;
let gw: TestGateway;

beforeAll(async () => {
  up = await startUpstream();
  key = await createTestKey('ES256');
  jwks = await startJwksServer(jwksOf(key));
  gw = await startGateway({
    auth: {
      providers: {
        idp: {
          issuer: ISSUER,
          jwksUri: jwks.url,
          algorithms: ['ES256'],
          audiences: [AUDIENCE],
          jwksCache: { timeout: '500ms', minRefetchInterval: '100ms' },
        },
      },
    },
    upstreams: { orders: { endpoints: [up.url] } },
    routes: [
      {
        name: 'orders-admin',
        match: { path: '/orders/admin' },
        upstream: 'orders',
        auth: { mode: 'required', scopes: ['orders:admin'] },
      },
      {
        name: 'orders',
        match: { path: '/orders' },
        upstream: 'orders',
        auth: { mode: 'required', scopes: ['orders:read'], forwardClaims: { 'x-user-id': 'sub' } },
      },
      { name: 'public', match: { path: '/public' }, upstream: 'orders', auth: { mode: 'optional' } },
    ],
  } as never);
});

afterAll(async () => {
  await gw?.close();
  await jwks?.close();
  await up?.close();
});

const last = () => up.requests[up.requests.length - 1]!;

describe('JWT at the edge', () => {
  it('is ready only once the provider has keys, and exposes it on /v1/auth', async () => {
    const deadline = Date.now() + 5000;
    let status = 0;
    while (status !== 200 && Date.now() < deadline) {
      status = (await fetch(`${gw.adminUrl}/readyz`)).status;
      if (status !== 200) await new Promise((r) => setTimeout(r, 20));
    }
    expect(status).toBe(200);
    const auth = (await (await fetch(`${gw.adminUrl}/v1/auth`)).json()) as { providers: { name?: string }[] };
    expect(auth.providers).toHaveLength(1);
  });

  it('forwards a valid token: claims mapped to headers, Authorization stripped, client claim headers replaced', async () => {
    const token = await mintToken(key, { subject: 'alice', claims: { scope: 'orders:read profile' } });
    const res = await fetch(`${gw.url}/orders/1`, {
      headers: { authorization: `Bearer ${token}`, 'x-user-id': 'mallory' },
    });
    expect(res.status).toBe(200);
    expect(last().headers['x-user-id']).toBe('alice');
    expect(last().headers.authorization).toBeUndefined();
    const line = gw.logs.access().find((l) => l.path === '/orders/1');
    expect(line?.subject).toBe('alice');
    expect(JSON.stringify(gw.logs.lines())).not.toContain(token);
  });

  it('answers 401 with WWW-Authenticate for a missing or bad token, before the upstream sees it', async () => {
    const before = up.requests.length;
    const missing = await fetch(`${gw.url}/orders/1`);
    expect(missing.status).toBe(401);
    expect(missing.headers.get('www-authenticate')).toMatch(/^Bearer realm="peregrine"/);
    expect(missing.headers.get('content-type')).toBe('application/problem+json');

    const none = await fetch(`${gw.url}/orders/1`, {
      headers: { authorization: `Bearer ${algNoneToken(key.kid)}` },
    });
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toContain('error="invalid_token"');

    const expired = await mintToken(key, {
      exp: Math.floor(Date.now() / 1000) - 3600,
      claims: { scope: 'orders:read' },
    });
    const res = await fetch(`${gw.url}/orders/1`, { headers: { authorization: `Bearer ${expired}` } });
    expect(res.status).toBe(401);
    const problem = (await res.json()) as { traceId: string };
    expect(problem.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(up.requests.length).toBe(before);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(
      /peregrine_auth_decisions_total\{[^}]*route="orders"[^}]*result="deny"[^}]*reason="expired"[^}]*\} 1/,
    );
  });

  it('answers 403 insufficient_scope when a scope is missing', async () => {
    const token = await mintToken(key, { claims: { scope: 'orders:read' } });
    const res = await fetch(`${gw.url}/orders/admin`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(403);
    expect(res.headers.get('www-authenticate')).toContain('error="insufficient_scope"');
  });

  it('authorises the normalised path: a traversal out of the public route meets the protected route', async () => {
    // Raw requests: fetch would resolve the dot-segments itself before sending.
    const before = up.requests.length;
    const token = await mintToken(key, { claims: { scope: 'orders:read' } });
    for (const target of [
      '/public/%2e%2e/orders/admin',
      '/public/./../orders/admin',
      '//orders//admin',
      '/public/%2E%2E/orders/%61dmin',
    ]) {
      const anonymous = await rawRequest(
        gw.port,
        `GET ${target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`,
      );
      expect(statusCodes(anonymous), target).toEqual([401]);
      const reader = await rawRequest(
        gw.port,
        `GET ${target} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`,
      );
      expect(statusCodes(reader), target).toEqual([403]);
    }
    expect(up.requests.length).toBe(before);
  });

  it('lets an optional route through without a token', async () => {
    const res = await fetch(`${gw.url}/public/x`);
    expect(res.status).toBe(200);
  });

  it('stays unready while a provider has never obtained keys', async () => {
    const down = await startJwksServer(jwksOf(key));
    await down.down();
    const local = await startGateway({
      auth: {
        providers: {
          idp: { issuer: ISSUER, jwksUri: down.url, algorithms: ['ES256'], audiences: [AUDIENCE] },
        },
      },
      upstreams: { orders: { endpoints: [up.url] } },
      routes: [{ name: 'orders', upstream: 'orders', auth: { mode: 'required' } }],
    } as never);
    try {
      const res = await fetch(`${local.adminUrl}/readyz`);
      expect(res.status).toBe(503);
      expect(((await res.json()) as { authProvidersWithoutKeys: string[] }).authProvidersWithoutKeys).toEqual(
        ['idp'],
      );
    } finally {
      await local.close();
      await down.close();
    }
  });

  it('applies the route auth to WebSocket handshakes too', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((r) => wss.once('listening', r));
    const seen: Record<string, unknown>[] = [];
    wss.on('connection', (sock, req) => {
      seen.push(req.headers);
      sock.on('message', (m) => sock.send(`echo:${m.toString()}`));
    });
    const wsPort = (wss.address() as { port: number }).port;
    const local = await startGateway({
      auth: {
        providers: {
          idp: { issuer: ISSUER, jwksUri: jwks.url, algorithms: ['ES256'], audiences: [AUDIENCE] },
        },
      },
      upstreams: { ws: { endpoints: [`http://127.0.0.1:${wsPort}`] } },
      routes: [
        { name: 'ws', upstream: 'ws', auth: { mode: 'required', forwardClaims: { 'x-user-id': 'sub' } } },
      ],
    } as never);
    try {
      const anonymous = new WebSocket(`ws://127.0.0.1:${local.port}/chat`);
      const refused = await new Promise<{ status: number; auth: string | undefined }>((resolve) =>
        anonymous.once('unexpected-response', (_req, res) =>
          resolve({
            status: res.statusCode ?? 0,
            auth: res.headers['www-authenticate'] as string | undefined,
          }),
        ),
      );
      expect(refused.status).toBe(401);
      expect(refused.auth).toMatch(/^Bearer/);
      expect(seen).toHaveLength(0);

      const token = await mintToken(key, { subject: 'ws-user' });
      const client = new WebSocket(`ws://127.0.0.1:${local.port}/chat`, {
        headers: { authorization: `Bearer ${token}`, 'x-user-id': 'spoofed' },
      });
      await new Promise((resolve, reject) => {
        client.once('open', resolve);
        client.once('error', reject);
      });
      const reply = new Promise<string>((resolve) => client.once('message', (m) => resolve(m.toString())));
      client.send('hi');
      expect(await reply).toBe('echo:hi');
      client.close();
      expect(seen[0]!['x-user-id']).toBe('ws-user');
      expect(seen[0]!.authorization).toBeUndefined();
    } finally {
      await local.close();
      await new Promise((r) => wss.close(r));
    }
  });

  it('removes the token cookie from Cookie upstream and keeps the other cookies as sent', async () => {
    const local = await startGateway({
      auth: {
        providers: {
          idp: {
            issuer: ISSUER,
            jwksUri: jwks.url,
            algorithms: ['ES256'],
            audiences: [AUDIENCE],
            tokenFrom: { cookie: 'tok' },
          },
        },
      },
      upstreams: { orders: { endpoints: [up.url] } },
      routes: [
        { name: 'open', match: { path: '/open' }, upstream: 'orders' },
        { name: 'orders', match: { path: '/orders' }, upstream: 'orders', auth: { mode: 'required' } },
      ],
    } as never);
    try {
      const token = await mintToken(key, { subject: 'cookie-user' });
      const others = 'theme=dark; token=keep; ref="a=b"';
      const cookies = async (path: string, cookie: string) => {
        const res = await fetch(`${local.url}${path}`, { headers: { cookie } });
        expect(res.status).toBe(200);
        return last().headers.cookie;
      };
      expect(await cookies('/orders/1', `theme=dark; tok=${token}; token=keep; ref="a=b"`)).toBe(others);
      expect(await cookies('/orders/2', `tok=${token};theme=dark;tok=${token}`)).toBe('theme=dark');
      expect(await cookies('/orders/3', `tok=${token}`)).toBeUndefined();
      expect(last().rawHeaders.map((h) => h.toLowerCase())).not.toContain('cookie');
      // One Cookie field per cookie, as HTTP/2 clients send them (here over HTTP/1.1).
      const raw = await rawRequest(
        local.port,
        `GET /orders/4 HTTP/1.1\r\nHost: gw\r\nCookie: a=1\r\nCookie: tok=${token}\r\nCookie: b=2\r\nConnection: close\r\n\r\n`,
      );
      expect(statusCodes(raw)).toEqual([200]);
      expect(last().headers.cookie).toBe('a=1; b=2');
      // A route without the JWT filter passes Cookie on untouched.
      expect(await cookies('/open', `tok=${token}; theme=dark`)).toBe(`tok=${token}; theme=dark`);
      expect(local.logs.access().filter((l) => l.subject === 'cookie-user')).toHaveLength(4);
      expect(local.logs.text()).not.toContain(token);
    } finally {
      await local.close();
    }
  });

  it('accepts a rotated key after one JWKS refetch', async () => {
    await new Promise((r) => setTimeout(r, 150));
    const next = await createTestKey('ES256');
    jwks.setKeys(jwksOf(key, next));
    const before = jwks.requests;
    const token = await mintToken(next, { claims: { scope: 'orders:read' } });
    const results = await Promise.all(
      Array.from({ length: 10 }, () =>
        fetch(`${gw.url}/orders/rotated`, { headers: { authorization: `Bearer ${token}` } }).then(
          (r) => r.status,
        ),
      ),
    );
    expect(results).toEqual(Array(10).fill(200));
    expect(jwks.requests - before).toBe(1);
  });
});
