/**
 * `rate_limit` policies in the config file: defaults, the shorthand forms, and every problem
 * reported at its key path with its line (what `peregrine validate` shows): windows in whole
 * seconds, one limit per window, insurance needing the replica count, a Redis store needing the
 * `redis` section, a claim key needing a jwt policy before it, where a policy may be listed.
 */
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadConfigFile, parseConfigText } from '../../../../src/config/loader.ts';
import { configProblems } from '../../../helpers/config-problems.ts';

const head = `listeners: [{ name: edge, address: 127.0.0.1:8080 }]
`;
const U = `upstreams: { u: { endpoints: [http://127.0.0.1:3001] } }
`;

function parse(yaml: string) {
  return parseConfigText(head + yaml, 'gw.yaml', {});
}

function problems(yaml: string): string[] {
  return configProblems(head + yaml, {});
}

describe('rate_limit settings', () => {
  it('take their defaults: keyed by client address, one budget, memory, insurance-free, standard fields', () => {
    const cfg = parse(`${U}policies:
  api: { kind: rate_limit, limits: [{ points: 100, duration: 1m }] }
routes:
  - { name: r, upstream: u, policies: [api] }
`);
    expect(cfg.policies.api).toEqual({
      kind: 'rate_limit',
      limits: [{ points: 100, duration: 60 }],
      limitBy: ['address'],
      ifMissing: 'address',
      per: 'policy',
      cost: 1,
      store: { type: 'memory' },
      maxKeys: 100_000,
      dryRun: false,
      headers: { standard: true, legacy: false },
    });
  });

  it('take maxKeys as a whole number from 1 to 100,000,000', () => {
    const cfg = parse(`${U}policies:
  api: { kind: rate_limit, limits: [{ points: 1, duration: 1s }], maxKeys: 5000 }
`);
    expect(cfg.policies.api!.maxKeys).toBe(5000);
    expect(
      problems(`${U}policies:
  a: { kind: rate_limit, limits: [{ points: 1, duration: 1s }], maxKeys: 0 }
  b: { kind: rate_limit, limits: [{ points: 1, duration: 1s }], maxKeys: 1.5 }
  c: { kind: rate_limit, limits: [{ points: 1, duration: 1s }], maxKeys: 1e9 }
`),
    ).toEqual([
      '4 policies.a.maxKeys: Too small: expected number to be >=1',
      '5 policies.b.maxKeys: Invalid input: expected int, received number',
      '6 policies.c.maxKeys: Too big: expected number to be <=100000000',
    ]);
  });

  it('read key none, a single key part, header names in any case, and a Redis store with its defaults', () => {
    const cfg = parse(`redis: { url: redis://127.0.0.1:6379 }
policies:
  a: { kind: rate_limit, limits: [{ points: 1, duration: 1s }], limitBy: none }
  b: { kind: rate_limit, limits: [{ points: 1, duration: 1s }], limitBy: claim:tenant.id }
  c: { kind: rate_limit, limits: [{ points: 1, duration: 1s }], limitBy: [identity, header:X-Tenant], store: { type: redis, replicas: 3 } }
`);
    expect(cfg.policies.a!.limitBy).toEqual([]);
    expect(cfg.policies.b!.limitBy).toEqual(['claim:tenant.id']);
    expect(cfg.policies.c!.limitBy).toEqual(['identity', 'header:x-tenant']);
    expect(cfg.policies.c!.store).toEqual({ type: 'redis', timeout: 50, onError: 'insurance', replicas: 3 });
  });

  it('report bad windows, a duplicate window, a bad key and missing replicas at their keys', () => {
    expect(
      problems(`redis: { url: redis://127.0.0.1:6379 }
policies:
  api:
    kind: rate_limit
    limits:
      - { points: 10, duration: 500ms }
      - { points: 10, duration: 1500ms }
      - { points: 0, duration: 1s }
      - { points: 5, duration: 1s }
    limitBy: [address, cookie:session]
    store: { type: redis }
`),
    ).toEqual([
      '7 policies.api.limits.0.duration: expected whole seconds, at least 1s (e.g. 1s, 30s, 1m, 1h), not "500ms"',
      '8 policies.api.limits.1.duration: expected whole seconds, at least 1s (e.g. 1s, 30s, 1m, 1h), not "1500ms"',
      '9 policies.api.limits.2.points: Too small: expected number to be >=1',
      '11 policies.api.limitBy.1: address, identity, claim:<name or dotted path>, or header:<name>',
    ]);
    expect(
      problems(`redis: { url: redis://127.0.0.1:6379 }
policies:
  api:
    kind: rate_limit
    limits: [{ points: 10, duration: 1s }, { points: 20, duration: 1s }]
    store: { type: redis }
`),
    ).toEqual([
      '6 policies.api.limits.1.duration: another limit of this policy has the same window (one limit per window)',
      '7 policies.api.store.replicas: insurance needs the number of gateway replicas sharing this policy (each counts limit/replicas while Redis is down)',
    ]);
  });

  it('report a Redis store without the redis section', () => {
    expect(
      problems(`policies:
  api: { kind: rate_limit, limits: [{ points: 1, duration: 1s }], store: { type: redis, onError: fail-open } }
`),
    ).toEqual([
      '3 policies.api.store.type: a Redis store needs the top-level redis section (the shared connection)',
    ]);
  });
});

describe('where a rate_limit policy is listed', () => {
  it('a claim key needs a jwt policy earlier in the route, inline or named', () => {
    const policies = `${U}auth: { providers: { idp: { issuer: https://idp.example/, algorithms: [ES256], jwksUri: https://idp.example/jwks } } }
policies:
  user: { kind: rate_limit, limits: [{ points: 1, duration: 1s }], limitBy: claim:sub }
  signed: { kind: jwt, mode: optional }
`;
    expect(
      problems(`${policies}routes:
  - { name: bad, upstream: u, policies: [user, signed] }
  - { name: named, upstream: u, policies: [signed, user] }
`),
    ).toEqual([
      '8 routes.0.policies.0: its key claim:sub reads the verified JWT: list a jwt policy (or auth:) before it on this route',
    ]);
    expect(
      problems(`${policies}routes:
  - { name: inline, upstream: u, auth: { mode: optional }, policies: [user] }
`),
    ).toEqual([]);
  });

  it('upstreams take rate limits, not per-route ones nor other kinds, and only known policies', () => {
    expect(
      problems(`upstreams:
  u: { endpoints: [http://127.0.0.1:3001], policies: [ceiling, perRoute, signed, nope, ceiling] }
auth: { providers: { idp: { issuer: https://idp.example/, algorithms: [ES256], jwksUri: https://idp.example/jwks } } }
policies:
  ceiling: { kind: rate_limit, limits: [{ points: 1, duration: 1s }], limitBy: none }
  perRoute: { kind: rate_limit, limits: [{ points: 1, duration: 1s }], per: route }
  signed: { kind: jwt, mode: optional }
`),
    ).toEqual([
      '3 upstreams.u.policies.1: a policy with per: route cannot apply to an upstream (use per: upstream or per: policy)',
      '3 upstreams.u.policies.2: a jwt policy applies to routes only (upstreams take: rate_limit)',
      '3 upstreams.u.policies.3: unknown policy "nope"',
      '3 upstreams.u.policies.4: policy ceiling is listed twice',
    ]);
  });
});

describe('the shipped example', () => {
  it('config/examples/rate-limits.yaml is valid', async () => {
    const file = fileURLToPath(new URL('../../../../config/examples/rate-limits.yaml', import.meta.url));
    const cfg = await loadConfigFile(file, {});
    expect(Object.keys(cfg.policies)).toEqual(['per-client', 'readers', 'per-user', 'orders-ceiling']);
    expect(cfg.upstreams.orders!.policies).toEqual(['orders-ceiling']);
  });
});
