/**
 * Rate limiting end to end with memory counters: the fields a client gets match the decisions,
 * 429s carry the policy, shared and per-route scopes, cost, exemptions, dry run, missing-key rules,
 * JWT claim keys, upstream ceilings across routes, WebSocket handshakes counted like requests, an
 * upstream's own 429 passed unchanged, metrics, span events, the access log, /v1/ratelimits, and
 * counters kept across a reload that leaves the policy as it was.
 *
 * The listener trusts 127.0.0.0/8 as a proxy, so each test picks its clients' addresses with
 * X-Forwarded-For and keys on the client address never collide between tests.
 */
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConfigInput } from '../../src/config/schema.ts';
import { startGateway, type TestGateway, writeConfig } from '../helpers/gateway.ts';
import { type JwksServer, startJwksServer } from '../helpers/jwks-server.ts';
import { metricValue, scrape } from '../helpers/tls-client.ts';
import { AUDIENCE, createTestKey, ISSUER, jwksOf, mintToken, type TestKey } from '../helpers/tokens.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';
import { opened, refusal, type WsUpstream, wsHandshake, wsUpstream } from '../helpers/ws-upstream.ts';

let up: TestUpstream;
let ws: WsUpstream;
let jwks: JwksServer;
let key: TestKey;
let gw: TestGateway;
const spans = new InMemorySpanExporter();

const MINUTE = '60s';

function config(extraRoutes: NonNullable<ConfigInput['routes']> = []): Partial<ConfigInput> {
  const route = (name: string, policies: string[], upstream = 'echo') => ({
    name,
    match: { path: `/${name}` },
    upstream,
    policies,
  });
  return {
    listeners: [{ name: 'edge', address: '127.0.0.1:0', trustedProxies: ['127.0.0.0/8'] }],
    telemetry: { tracing: { sampleRatio: 1 } },
    auth: {
      providers: {
        idp: { issuer: ISSUER, jwksUri: jwks.url, algorithms: ['ES256'], audiences: [AUDIENCE] },
      },
    },
    policies: {
      three: { kind: 'rate_limit', limits: [{ points: 3, duration: MINUTE }] },
      legacy: {
        kind: 'rate_limit',
        limits: [
          { points: 5, duration: MINUTE },
          { points: 2, duration: '10s', name: 'legacy-short' },
        ],
        headers: { legacy: true },
      },
      shared: { kind: 'rate_limit', limits: [{ points: 4, duration: MINUTE }], limitBy: 'none' },
      perRoute: {
        kind: 'rate_limit',
        limits: [{ points: 2, duration: MINUTE }],
        limitBy: 'none',
        per: 'route',
      },
      costly: {
        kind: 'rate_limit',
        limits: [{ points: 10, duration: MINUTE }],
        cost: { default: 1, methods: { POST: 4, OPTIONS: 0 } },
      },
      exempting: {
        kind: 'rate_limit',
        limits: [{ points: 1, duration: MINUTE }],
        exempt: { addresses: ['198.51.100.0/24'] },
      },
      dry: { kind: 'rate_limit', limits: [{ points: 1, duration: MINUTE }], dryRun: true },
      headerFallback: {
        kind: 'rate_limit',
        limits: [{ points: 1, duration: MINUTE }],
        limitBy: 'header:x-api-key',
      },
      headerReject: {
        kind: 'rate_limit',
        limits: [{ points: 1, duration: MINUTE }],
        limitBy: 'header:x-api-key',
        ifMissing: 'reject',
      },
      headerSkip: {
        kind: 'rate_limit',
        limits: [{ points: 1, duration: MINUTE }],
        limitBy: 'header:x-api-key',
        ifMissing: 'skip',
      },
      signedIn: { kind: 'jwt', mode: 'optional' },
      bySubject: {
        kind: 'rate_limit',
        limits: [{ points: 2, duration: MINUTE }],
        limitBy: 'claim:sub',
        ifMissing: 'skip',
      },
      ceiling: { kind: 'rate_limit', limits: [{ points: 3, duration: MINUTE }], limitBy: 'none' },
      wsCeiling: { kind: 'rate_limit', limits: [{ points: 3, duration: MINUTE }], limitBy: 'none' },
      oneUpgrade: { kind: 'rate_limit', limits: [{ points: 1, duration: MINUTE }] },
      fewKeys: {
        kind: 'rate_limit',
        limits: [{ points: 2, duration: MINUTE }],
        limitBy: 'header:x-client',
        ifMissing: 'skip',
        maxKeys: 5,
      },
    },
    upstreams: {
      echo: { endpoints: [up.url] },
      capped: { endpoints: [up.url], policies: ['ceiling'] },
      sockets: { endpoints: [ws.url], policies: ['wsCeiling'] },
      chat: { endpoints: [ws.url] },
    },
    routes: [
      route('three', ['three']),
      route('legacy', ['legacy']),
      route('sharedA', ['shared']),
      route('sharedB', ['shared']),
      route('perRouteA', ['perRoute']),
      route('perRouteB', ['perRoute']),
      route('costly', ['costly']),
      route('exempting', ['exempting']),
      route('dry', ['dry']),
      route('headerFallback', ['headerFallback']),
      route('headerReject', ['headerReject']),
      route('headerSkip', ['headerSkip']),
      route('bySubject', ['signedIn', 'bySubject']),
      route('fewKeys', ['fewKeys']),
      route('cap1', [], 'capped'),
      route('cap2', [], 'capped'),
      route('sockets', [], 'sockets'),
      route('chat', ['oneUpgrade'], 'chat'),
      route('upstream429', ['three']),
      ...extraRoutes,
    ] as NonNullable<ConfigInput['routes']>,
  } as Partial<ConfigInput>;
}

beforeAll(async () => {
  up = await startUpstream((req, res) => {
    if (!req.url?.startsWith('/upstream429')) return false;
    res.writeHead(429, {
      'content-type': 'text/plain',
      'retry-after': '7',
      ratelimit: '"upstream";r=0;t=7',
    });
    res.end('slow down');
    return true;
  });
  ws = await wsUpstream();
  key = await createTestKey('ES256');
  jwks = await startJwksServer(jwksOf(key));
  gw = await startGateway(config(), { spanProcessor: new SimpleSpanProcessor(spans), asFile: true });
});

afterAll(async () => {
  await gw?.close();
  await ws?.close();
  await jwks?.close();
  await up?.close();
});

interface Answer {
  status: number;
  headers: Headers;
  body: string;
}

async function get(
  path: string,
  client: string,
  init: RequestInit & { headers?: Record<string, string> } = {},
) {
  const res = await fetch(`${gw.url}${path}`, {
    ...init,
    headers: { 'x-forwarded-for': client, ...init.headers },
  });
  return { status: res.status, headers: res.headers, body: await res.text() } satisfies Answer;
}

async function statuses(path: string, client: string, n: number, init: RequestInit = {}): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await get(path, client, init as never)).status);
  return out;
}

describe('response fields', () => {
  it('RateLimit and RateLimit-Policy say what was counted; the 429 adds Retry-After and names the policy', async () => {
    const answers: Answer[] = [];
    for (let i = 0; i < 4; i++) answers.push(await get('/three', '203.0.113.1'));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 429]);
    for (const a of answers) expect(a.headers.get('ratelimit-policy')).toBe('"three";q=3;w=60');
    const fields = answers.map((a) => /^"three";r=(\d+);t=(\d+)$/.exec(a.headers.get('ratelimit') ?? ''));
    expect(fields.map((f) => Number(f?.[1]))).toEqual([2, 1, 0, 0]);
    for (const f of fields) {
      const t = Number(f?.[2]);
      expect(t).toBeGreaterThan(55);
      expect(t).toBeLessThanOrEqual(60);
    }
    const refused = answers[3]!;
    expect(refused.headers.get('content-type')).toBe('application/problem+json');
    // Retry-After is the effective window of the limit that refused.
    expect(refused.headers.get('retry-after')).toBe(fields[3]![2]);
    expect(JSON.parse(refused.body)).toMatchObject({
      status: 429,
      code: 'RATE_LIMITED',
      policy: 'three',
      'violated-policies': ['three'],
    });
    // Another client has its own budget.
    expect((await get('/three', '203.0.113.2')).status).toBe(200);
  });

  it('names each limit of a policy with several, and sends the legacy fields of the nearest one', async () => {
    const a = await get('/legacy', '203.0.113.10');
    expect(a.headers.get('ratelimit-policy')).toBe('"legacy/60s";q=5;w=60, "legacy-short";q=2;w=10');
    expect(a.headers.get('ratelimit')).toMatch(/^"legacy\/60s";r=4;t=\d+, "legacy-short";r=1;t=\d+$/);
    expect(a.headers.get('x-ratelimit-limit')).toBe('2');
    expect(a.headers.get('x-ratelimit-remaining')).toBe('1');
    expect(Number(a.headers.get('x-ratelimit-reset'))).toBeLessThanOrEqual(10);
    await get('/legacy', '203.0.113.10');
    const refused = await get('/legacy', '203.0.113.10');
    expect(refused.status).toBe(429);
    expect(JSON.parse(refused.body)['violated-policies']).toEqual(['legacy-short']);
    expect(Number(refused.headers.get('retry-after'))).toBeLessThanOrEqual(10);
    expect(refused.headers.get('x-ratelimit-remaining')).toBe('0');
  });

  it("passes an upstream's own 429 unchanged: its Retry-After and fields, none of the gateway's", async () => {
    const a = await get('/upstream429', '203.0.113.20');
    expect(a.status).toBe(429);
    expect(a.body).toBe('slow down');
    expect(a.headers.get('retry-after')).toBe('7');
    expect(a.headers.get('ratelimit')).toBe('"upstream";r=0;t=7');
    expect(a.headers.get('ratelimit-policy')).toBeNull();
  });
});

describe('scope', () => {
  it('a policy listed by two routes has one budget for both', async () => {
    const a = await statuses('/sharedA', '203.0.113.30', 3);
    const b = await statuses('/sharedB', '203.0.113.31', 3);
    expect([...a, ...b]).toEqual([200, 200, 200, 200, 429, 429]);
  });

  it('per: route gives each route its own budget', async () => {
    const a = await statuses('/perRouteA', '203.0.113.32', 3);
    const b = await statuses('/perRouteB', '203.0.113.33', 3);
    expect(a).toEqual([200, 200, 429]);
    expect(b).toEqual([200, 200, 429]);
  });

  it('an upstream ceiling counts every route to it, and answers 429 at admission', async () => {
    const before = up.requests.length;
    const got = [
      ...(await statuses('/cap1', '203.0.113.40', 2)),
      ...(await statuses('/cap2', '203.0.113.41', 2)),
    ];
    expect(got).toEqual([200, 200, 200, 429]);
    expect(up.requests.length - before).toBe(3);
    const refused = await get('/cap1', '203.0.113.42');
    expect(JSON.parse(refused.body)).toMatchObject({ code: 'RATE_LIMITED', policy: 'ceiling' });
  });
});

describe('what a request costs and who is counted', () => {
  it('charges each request its method cost; a cost of 0 is not counted', async () => {
    const got = [
      (await get('/costly', '203.0.113.50', { method: 'POST', body: 'x' })).status,
      (await get('/costly', '203.0.113.50', { method: 'POST', body: 'x' })).status,
      (await get('/costly', '203.0.113.50')).status,
      (await get('/costly', '203.0.113.50')).status,
      (await get('/costly', '203.0.113.50', { method: 'OPTIONS' })).status,
      (await get('/costly', '203.0.113.50')).status,
    ];
    // 4 + 4 + 1 + 1 = 10 points: the sixth request (a GET) no longer fits; OPTIONS costs nothing.
    expect(got).toEqual([200, 200, 200, 200, 200, 429]);
  });

  it('never counts exempt client addresses', async () => {
    expect(await statuses('/exempting', '198.51.100.7', 4)).toEqual([200, 200, 200, 200]);
    expect(await statuses('/exempting', '203.0.113.60', 2)).toEqual([200, 429]);
  });

  it('reads the client address through trusted proxies only: a spoofed X-Forwarded-For ahead of them counts for nothing', async () => {
    // The nearest untrusted hop is the client; what it claims further left is ignored.
    expect((await get('/exempting', '198.51.100.7, 203.0.113.61')).status).toBe(200);
    expect((await get('/exempting', '198.51.100.8, 203.0.113.61')).status).toBe(429);
  });
});

describe('dry run', () => {
  it('admits everything, sends no fields, and counts and logs what it would have refused', async () => {
    const answers = [await get('/dry', '203.0.113.70'), await get('/dry', '203.0.113.70')];
    expect(answers.map((a) => a.status)).toEqual([200, 200]);
    for (const a of answers) {
      expect(a.headers.get('ratelimit')).toBeNull();
      expect(a.headers.get('ratelimit-policy')).toBeNull();
    }
    const text = await scrape(gw.adminUrl);
    expect(
      metricValue(text, 'peregrine_ratelimit_decisions_total', { policy: 'dry', outcome: 'allowed' }),
    ).toBe(1);
    expect(
      metricValue(text, 'peregrine_ratelimit_decisions_total', { policy: 'dry', outcome: 'dry_run_limited' }),
    ).toBe(1);
    const line = gw.logs
      .lines()
      .find((l) => l.msg === 'rate limit dry run: requests over the limit were admitted');
    expect(line).toMatchObject({ policy: 'dry', wouldHaveLimited: 1 });
    const access = gw.logs.access().filter((l) => l.route === 'dry');
    expect(access.map((l) => l.rateLimitOutcome)).toEqual(['allowed', 'dry_run_limited']);
  });
});

describe('keys', () => {
  it('without the key header: falls back to the client address, refuses (403), or does not count', async () => {
    // Fallback: counted by address, so a second request from the same address is over.
    expect(await statuses('/headerFallback', '203.0.113.80', 2)).toEqual([200, 429]);
    // With the header, the key is the header's value, whatever the address.
    expect((await get('/headerFallback', '203.0.113.80', { headers: { 'x-api-key': 'k1' } })).status).toBe(
      200,
    );
    expect((await get('/headerFallback', '203.0.113.81', { headers: { 'x-api-key': 'k1' } })).status).toBe(
      429,
    );

    const rejected = await get('/headerReject', '203.0.113.82');
    expect(rejected.status).toBe(403);
    expect(JSON.parse(rejected.body)).toMatchObject({
      code: 'RATE_LIMIT_KEY_MISSING',
      policy: 'headerReject',
    });
    expect((await get('/headerReject', '203.0.113.82', { headers: { 'x-api-key': 'k2' } })).status).toBe(200);

    expect(await statuses('/headerSkip', '203.0.113.83', 3)).toEqual([200, 200, 200]);
    expect(
      await statuses('/headerSkip', '203.0.113.83', 2, { headers: { 'x-api-key': 'k3' } } as RequestInit),
    ).toEqual([200, 429]);
    const text = await scrape(gw.adminUrl);
    expect(
      metricValue(text, 'peregrine_ratelimit_decisions_total', {
        policy: 'headerReject',
        outcome: 'key_missing',
      }),
    ).toBe(1);
    expect(
      metricValue(text, 'peregrine_ratelimit_decisions_total', { policy: 'headerSkip', outcome: 'skipped' }),
    ).toBe(3);
  });

  it('counts by a verified JWT claim: one budget per subject, whatever the address', async () => {
    const alice = await mintToken(key, { subject: 'alice' });
    const bob = await mintToken(key, { subject: 'bob' });
    const as = (token: string, client: string) =>
      get('/bySubject', client, { headers: { authorization: `Bearer ${token}` } });
    const got = [
      (await as(alice, '203.0.113.90')).status,
      (await as(alice, '203.0.113.91')).status,
      (await as(alice, '203.0.113.92')).status,
      (await as(bob, '203.0.113.90')).status,
    ];
    expect(got).toEqual([200, 200, 429, 200]);
    // Anonymous (the jwt policy is optional): no claim, and this policy skips such requests.
    expect(await statuses('/bySubject', '203.0.113.93', 3)).toEqual([200, 200, 200]);
  });
});

describe('WebSocket handshakes', () => {
  it('count like requests at an upstream ceiling, and a refused one is answered 429', async () => {
    expect((await get('/sockets', '203.0.113.100')).status).toBe(200);
    const first = wsHandshake(gw.port, '/sockets', { 'x-forwarded-for': '203.0.113.101' });
    const second = wsHandshake(gw.port, '/sockets', { 'x-forwarded-for': '203.0.113.102' });
    await opened(first);
    await opened(second);
    const third = wsHandshake(gw.port, '/sockets', { 'x-forwarded-for': '203.0.113.103' });
    const answer = await refusal(third);
    expect(answer.status).toBe(429);
    expect(JSON.parse(answer.body)).toMatchObject({ code: 'RATE_LIMITED', policy: 'wsCeiling' });
    expect(answer.headers['retry-after']).toBeDefined();
    expect((await get('/sockets', '203.0.113.104')).status).toBe(429);
    for (const h of [first, second, third]) h.ws.terminate();
  });

  it("count like requests on a route's chain, and the 101 carries the fields", async () => {
    const first = wsHandshake(gw.port, '/chat', { 'x-forwarded-for': '203.0.113.110' });
    await opened(first);
    expect((await first.upgradeHeaders).ratelimit).toMatch(/^"oneUpgrade";r=0;t=\d+$/);
    const second = wsHandshake(gw.port, '/chat', { 'x-forwarded-for': '203.0.113.110' });
    expect((await refusal(second)).status).toBe(429);
    for (const h of [first, second]) h.ws.terminate();
  });
});

describe('telemetry', () => {
  it('a refused request has a span event, a deny policy result, and an access line naming the policy', async () => {
    const client = '203.0.113.120';
    for (let i = 0; i < 3; i++) await get('/three', client);
    const refused = await get('/three', client);
    expect(refused.status).toBe(429);
    const requestId = JSON.parse(refused.body).requestId as string;
    const span = spans
      .getFinishedSpans()
      .find((s) => s.kind === 1 && s.attributes['peregrine.request_id'] === requestId);
    expect(span?.attributes['peregrine.policy.result']).toBe('deny:RATE_LIMITED');
    const event = span?.events.find((e) => e.name === 'peregrine.ratelimit.limited');
    expect(event?.attributes).toMatchObject({
      'peregrine.ratelimit.policy': 'three',
      'peregrine.ratelimit.limits': ['three'],
      'peregrine.ratelimit.dry_run': false,
    });
    const line = gw.logs.access().find((l) => l.requestId === requestId);
    expect(line).toMatchObject({
      status: 429,
      code: 'RATE_LIMITED',
      rateLimitPolicy: 'three',
      rateLimitOutcome: 'limited',
    });
    const text = await scrape(gw.adminUrl);
    expect(
      metricValue(text, 'peregrine_ratelimit_decisions_total', { policy: 'three', outcome: 'limited' }),
    ).toBeGreaterThanOrEqual(2);
  });

  it('/v1/ratelimits lists each policy, where it applies, and its settings', async () => {
    const body = (await (await fetch(`${gw.adminUrl}/v1/ratelimits`)).json()) as {
      redis: unknown;
      policies: { name: string; appliesTo: { routes: string[]; upstreams: string[] }; store: unknown }[];
    };
    expect(body.redis).toBeNull();
    const byName = new Map(body.policies.map((p) => [p.name, p]));
    expect(byName.get('shared')?.appliesTo).toEqual({ routes: ['sharedA', 'sharedB'], upstreams: [] });
    expect(byName.get('ceiling')?.appliesTo).toEqual({ routes: [], upstreams: ['capped'] });
    expect(byName.get('three')).toMatchObject({
      limits: [{ name: 'three', points: 3, windowSeconds: 60, blockSeconds: null, burst: null }],
      countedBy: ['address'],
      whenMissing: 'address',
      per: 'policy',
      store: { type: 'memory' },
      degraded: false,
    });
    expect(byName.has('signedIn')).toBe(false);
  });
});

describe('maxKeys', () => {
  it("holds at most maxKeys keys: a new one takes the oldest window's place, counted; the rest count on exactly", async () => {
    const send = (client: string) =>
      fetch(`${gw.url}/fewKeys`, { headers: { 'x-client': client } }).then(async (r) => {
        await r.arrayBuffer();
        // The points left (r), without the seconds to the window's end.
        return [r.status, r.headers.get('ratelimit')?.replace(/;t=\d+$/, '')] as const;
      });
    // Twelve keys, one request each, in turn: the last five are held, the first seven were evicted.
    for (let i = 1; i <= 12; i++) expect((await send(`client-${i}`))[0]).toBe(200);
    let text = await scrape(gw.adminUrl);
    expect(metricValue(text, 'peregrine_ratelimit_keys', { policy: 'fewKeys' })).toBe(5);
    expect(metricValue(text, 'peregrine_ratelimit_evictions_total', { policy: 'fewKeys' })).toBe(7);
    // A held key goes on from its count; an evicted one starts a new window (and evicts another).
    expect(await send('client-12')).toEqual([200, '"fewKeys";r=0']);
    expect((await send('client-12'))[0]).toBe(429);
    expect(await send('client-1')).toEqual([200, '"fewKeys";r=1']);
    text = await scrape(gw.adminUrl);
    expect(metricValue(text, 'peregrine_ratelimit_keys', { policy: 'fewKeys' })).toBe(5);
    expect(metricValue(text, 'peregrine_ratelimit_evictions_total', { policy: 'fewKeys' })).toBe(8);
    const body = (await (await fetch(`${gw.adminUrl}/v1/ratelimits`)).json()) as {
      policies: { name: string; maxKeys: number; keys: number }[];
    };
    expect(body.policies.find((p) => p.name === 'fewKeys')).toMatchObject({ maxKeys: 5, keys: 5 });
    expect(body.policies.find((p) => p.name === 'three')).toMatchObject({ maxKeys: 100_000 });
  });
});

describe('reload', () => {
  it('keeps the counters of a policy whose settings did not change', async () => {
    const client = '203.0.113.130';
    expect(await statuses('/three', client, 3)).toEqual([200, 200, 200]);
    writeConfig(gw.configFile!, config([{ name: 'extra', match: { path: '/extra' }, upstream: 'echo' }]));
    const result = await gw.gateway.reload('test');
    expect(result).toMatchObject({ ok: true, changed: true });
    expect((await get('/extra', client)).status).toBe(200);
    expect((await get('/three', client)).status).toBe(429);
  });
});
