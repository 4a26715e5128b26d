/**
 * Micro-benchmark of the JWT stage: a request whose token was verified before (the cached path:
 * token from the header, Map lookup, exp check, scope check, one claim header) against a first
 * verification (structural checks + jose signature and claim checks) for ES256, RS256 and EdDSA.
 * Not a test; run with `node bench/micro/jwt.ts` (Node 24).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type CryptoKey, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import pino from 'pino';
import type { Snapshot } from '../../src/control/snapshot.ts';
import { RequestContext } from '../../src/dataplane/context.ts';
import { createJwtFilter, type JwtFilter } from '../../src/dataplane/filters/jwt/jwt-filter.ts';
import { createAuthProviders } from '../../src/dataplane/filters/jwt/providers.ts';
import { AuthProviderSchema, RouteAuthSchema } from '../../src/dataplane/filters/jwt/schema.ts';
import { createMetrics } from '../../src/telemetry/metrics.ts';
import { bench, header } from './harness.ts';

const ISSUER = 'https://idp.example.com/';
type Alg = 'ES256' | 'RS256' | 'EdDSA';
const ALGS: Alg[] = ['ES256', 'RS256', 'EdDSA'];

const keys = new Map<Alg, { privateKey: CryptoKey; publicKey: CryptoKey; jwk: Record<string, unknown> }>();
for (const alg of ALGS) {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  keys.set(alg, { privateKey, publicKey, jwk: { ...(await exportJWK(publicKey)), kid: `k-${alg}`, alg } });
}

function mint(alg: Alg, sub: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({
    sub,
    scope: 'openid profile orders:read orders:write',
    tenant: 'acme',
    realm_access: { roles: ['user', 'ops'] },
  })
    .setProtectedHeader({ alg, kid: `k-${alg}`, typ: 'at+jwt' })
    .setIssuer(ISSUER)
    .setAudience('orders-api')
    .setIssuedAt(now)
    .setExpirationTime(now + 3600)
    .sign(keys.get(alg)!.privateKey);
}

const metrics = createMetrics({ exemplars: false, version: 'bench' });
const providers = createAuthProviders(
  {
    providers: {
      main: AuthProviderSchema.parse({
        issuer: ISSUER,
        audiences: ['orders-api'],
        algorithms: ALGS,
        jwks: { keys: [...keys.values()].map((k) => k.jwk) },
        tokenCache: { maxEntries: 100_000 },
      }),
    },
  },
  undefined,
  { metrics, logger: pino({ level: 'silent' }) },
);
await providers.start();
const filter: JwtFilter = createJwtFilter(
  'orders',
  RouteAuthSchema.parse({
    scopes: ['orders:read'],
    roles: { claim: 'realm_access.roles', anyOf: ['ops', 'admin'] },
    forwardClaims: { 'x-user-id': 'sub' },
  }),
  providers,
  metrics,
)!;

function context(token: string): RequestContext {
  return new RequestContext(
    { headers: { authorization: `Bearer ${token}` } } as IncomingMessage,
    {} as ServerResponse,
    {} as Snapshot,
    0,
  );
}

header('cached verification (token seen before), per request');
const warm = await mint('ES256', 'warm');
await filter.onRequest(context(warm));
console.log(`token length ${warm.length} characters`);
// The header value is made fresh each time from bytes, as the HTTP parser does, so V8 has no
// hash cached on it; the baseline line measures that part alone.
const raw = Buffer.from(`Bearer ${warm}`, 'latin1');
function freshContext(): RequestContext {
  return new RequestContext(
    { headers: { authorization: raw.toString('latin1') } } as IncomingMessage,
    {} as ServerResponse,
    {} as Snapshot,
    0,
  );
}
const base = bench('baseline: RequestContext + fresh header string', () => {
  freshContext();
});
const cached = bench('onRequest, cached ES256 token (scope + role check, 1 claim header)', () => {
  if (filter.onRequest(freshContext()) !== undefined) throw new Error('not cached');
});
console.log(
  `${'  → the JWT stage itself'.padEnd(66)} ${(cached.nsPerOp - base.nsPerOp).toFixed(0).padStart(6)} ns/op`,
);

header('first verification (token never seen), per request, sequential');
const ROUNDS = 7;
const PER_ROUND = 300;

/** Fastest and median round of `fn` over fresh tokens, in ns per call (as harness.ts reports). */
async function benchAsync(
  name: string,
  tokens: string[][],
  fn: (token: string) => Promise<unknown>,
): Promise<void> {
  const samples: number[] = [];
  for (const round of tokens) {
    const start = process.hrtime.bigint();
    for (const t of round) await fn(t);
    samples.push(Number(process.hrtime.bigint() - start) / round.length);
  }
  samples.sort((a, b) => a - b);
  const median = samples[Math.floor(samples.length / 2)]!;
  console.log(
    `${name.padEnd(66)} ${samples[0]!.toFixed(0).padStart(6)} ns/op  (median ${median.toFixed(0)})`,
  );
}

for (const alg of ALGS) {
  const rounds = await Promise.all(
    Array.from({ length: ROUNDS + 1 }, (_, r) =>
      Promise.all(Array.from({ length: PER_ROUND }, (_, i) => mint(alg, `u${r}-${i}`))),
    ),
  );
  // The first round warms up.
  for (const t of rounds[0]!) await filter.onRequest(context(t));
  await benchAsync(`onRequest, new ${alg} token`, rounds.slice(1), (t) => filter.onRequest(context(t))!);
  const key = keys.get(alg)!.publicKey;
  await benchAsync(`  jose jwtVerify alone, ${alg}`, rounds.slice(1), (t) =>
    jwtVerify(t, key, { issuer: ISSUER, audience: 'orders-api' }),
  );
}

providers.close();
