/**
 * Named policies in the config file: the top-level `policies` map checked by each kind's own
 * schema, a route's `policies` list, and the problems reported at their key path and line, as
 * `peregrine validate` shows them.
 */
import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../../src/config/loader.ts';
import { configProblems } from '../../helpers/config-problems.ts';

const EC_PEM = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
  .publicKey.export({ type: 'spki', format: 'pem' })
  .toString();

const head = `listeners: [{ name: edge, address: 127.0.0.1:8080 }]
upstreams: { u: { endpoints: [http://127.0.0.1:3001] } }
auth:
  providers:
    idp: { issuer: https://idp.example/, algorithms: [ES256], publicKeys: ['\${PEM}'] }
`;

function parse(yaml: string) {
  return parseConfigText(head + yaml, 'gw.yaml', { PEM: EC_PEM });
}

function problems(yaml: string): string[] {
  return configProblems(head + yaml, { PEM: EC_PEM });
}

describe('named policies', () => {
  it('are parsed with their kind schema defaults; routes list them by name; the inline keys still work', () => {
    const cfg = parse(`policies:
  readers: { kind: jwt, scopes: [orders:read] }
  payments-only: { kind: identity, allow: ['spiffe://prod/ns/payments/*'] }
routes:
  - { name: named, upstream: u, policies: [payments-only, readers] }
  - { name: inline, upstream: u, auth: { mode: optional } }
`);
    expect(cfg.policies.readers).toEqual({
      kind: 'jwt',
      mode: 'required',
      scopes: ['orders:read'],
      forwardClaims: {},
      forwardAuthorization: false,
    });
    expect(cfg.policies['payments-only']).toEqual({
      kind: 'identity',
      allow: ['spiffe://prod/ns/payments/*'],
    });
    expect(cfg.routes[0]!.policies).toEqual(['payments-only', 'readers']);
    expect(cfg.routes[1]!.auth?.mode).toBe('optional');
    expect(cfg.routes[1]!.policies).toBeUndefined();
  });

  it('report an unknown kind, a missing kind and bad settings at the policy key, with lines', () => {
    expect(
      problems(`policies:
  a: { kind: ratelimit }
  b: { allow: [x] }
  c:
    kind: jwt
    scopes: [orders:read]
    mode: optional
    extra: 1
routes: []
`),
    ).toEqual([
      '7 policies.a.kind: unknown policy kind "ratelimit" (kinds: identity, jwt, rate_limit)',
      '8 policies.b.kind: required key is missing (kinds: identity, jwt, rate_limit)',
      '12 policies.c.mode: scopes and roles need mode: required',
      '13 policies.c.extra: unknown key "extra"',
    ]);
  });

  it('report unknown and repeated references, two policies of a one-per-route kind, and kind cross-checks', () => {
    expect(
      problems(`policies:
  readers: { kind: jwt, providers: [idp, nope] }
  writers: { kind: jwt }
routes:
  - { name: r0, upstream: u, policies: [readers, missing] }
  - { name: r1, upstream: u, policies: [writers, writers] }
  - { name: r2, upstream: u, auth: {}, policies: [writers] }
  - { name: r3, upstream: u, identity: { allow: ['spiffe://a/b'] }, auth: { providers: [gone] } }
`),
    ).toEqual([
      '7 policies.readers.providers.1: unknown auth provider "nope"',
      '10 routes.0.policies.1: unknown policy "missing"',
      '11 routes.1.policies.1: policy writers is listed twice',
      '12 routes.2.policies.0: a route takes one jwt policy; it has auth already',
      '13 routes.3.auth.providers.0: unknown auth provider "gone"',
    ]);
  });
});
