/**
 * A route's policy chain, compiled from the registry of kinds: order (inline keys first, in
 * registry order, then the route's `policies`), one filter per policy and route, the denials and
 * owned headers of the chain, and per-policy state carried across snapshots by policy name and
 * config fingerprint. Runs with test kinds besides the real ones: adding a kind is adding an
 * entry to the list.
 */
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { RouteSchema } from '../../../src/config/schema.ts';
import type { RequestContext } from '../../../src/dataplane/context.ts';
import type { CarriedState } from '../../../src/dataplane/filters/carried-state.ts';
import { compilePlans, EMPTY_PLAN } from '../../../src/dataplane/filters/chain.ts';
import type { PolicyEnv, PolicyKind, PolicyState } from '../../../src/dataplane/filters/filter.ts';
import { createAuthProviders } from '../../../src/dataplane/filters/jwt/providers.ts';
import { AuthSchema } from '../../../src/dataplane/filters/jwt/schema.ts';
import { type AnyPolicyKind, POLICY_KINDS } from '../../../src/dataplane/filters/kinds.ts';
import type { PolicyConfig } from '../../../src/dataplane/filters/policy-schema.ts';
import { createRouteTable } from '../../../src/dataplane/routing/route-table.ts';
import { GatewayError } from '../../../src/errors.ts';
import { createMetrics } from '../../../src/telemetry/metrics.ts';

class Counter implements PolicyState {
  static built = 0;
  count = 0;
  closed = false;
  readonly limit: number;
  constructor(limit: number) {
    this.limit = limit;
    Counter.built++;
  }
  close(): void {
    this.closed = true;
  }
}

/** A test kind with state: counts the requests of every route that lists the policy. */
const countingKind: PolicyKind<{ limit: number }, Counter> = {
  kind: 'counting',
  schema: z.strictObject({ limit: z.number() }),
  onePerRoute: false,
  denials: ['UPSTREAM_OVERLOADED'],
  createState(policy) {
    return new Counter(policy.config.limit);
  },
  create(policy, route, _env, state) {
    return {
      name: `${policy.name}@${route}`,
      ownedHeaders: new Set(['x-count']),
      onRequest() {
        state.count++;
        return undefined;
      },
    };
  },
};

/** A stateless test kind that does nothing on some routes. */
const tagKind: PolicyKind<{ on: boolean }> = {
  kind: 'tag',
  schema: z.strictObject({ on: z.boolean() }),
  onePerRoute: false,
  denials: ['FORBIDDEN'],
  create(policy, route) {
    return policy.config.on ? { name: `${policy.name}@${route}`, onRequest: () => undefined } : undefined;
  },
};

/**
 * A test kind that also applies at admission: its gate answers after a turn (as a shared store
 * would) and refuses once the policy's state has counted `limit` requests, route and gate together.
 */
const gateKind: PolicyKind<{ limit: number }, Counter> = {
  ...countingKind,
  kind: 'gating',
  denials: ['CIRCUIT_OPEN'],
  createGate(policy, upstream, _env, state) {
    return {
      name: `${policy.name}@${upstream}`,
      admit: async () => {
        await Promise.resolve();
        return ++state.count > state.limit ? new GatewayError('CIRCUIT_OPEN', policy.name) : undefined;
      },
    };
  },
};

const KINDS: readonly AnyPolicyKind[] = [...POLICY_KINDS, countingKind, tagKind, gateKind];

const metrics = createMetrics({ exemplars: false, version: 't' });
const logger = pino({ enabled: false });

const opened: { close(): void }[] = [];
afterEach(() => {
  for (const o of opened.splice(0)) o.close();
});

function env(): PolicyEnv {
  const auth = createAuthProviders(
    AuthSchema.parse({
      providers: {
        idp: { issuer: 'https://idp/', algorithms: ['ES256'], jwksUri: 'http://127.0.0.1:1/jwks' },
      },
    }),
    undefined,
    { metrics, logger },
  );
  opened.push(auth);
  return { metrics, logger, auth };
}

function routes(list: Record<string, unknown>[]) {
  return createRouteTable(
    list.map((r, i) => RouteSchema.parse({ upstream: 'u', match: { path: `/${i}` }, ...r })),
  ).routes;
}

function compile(
  rs: Record<string, unknown>[],
  policies: Record<string, PolicyConfig>,
  previous?: CarriedState<PolicyState>,
  upstreams: Record<string, { policies?: string[] }> = {},
) {
  const compiled = compilePlans(routes(rs), policies, previous, env(), KINDS, upstreams);
  opened.push(compiled.state);
  return compiled;
}

describe('compilePlans', () => {
  it('a route without policies gets the empty plan', () => {
    const { plans } = compile([{ name: 'bare' }], {});
    expect(plans.get('bare')).toBe(EMPTY_PLAN);
  });

  it('runs the inline keys first, in registry order, then the route policies in their order', () => {
    const { plans } = compile(
      [
        {
          name: 'r',
          policies: ['b', 'count', 'a'],
          auth: { mode: 'optional', providers: ['idp'] },
          identity: { allow: ['spiffe://x/y'] },
        },
      ],
      { a: { kind: 'tag', on: true }, b: { kind: 'tag', on: true }, count: { kind: 'counting', limit: 1 } },
    );
    const plan = plans.get('r')!;
    expect(plan.policies).toEqual([
      { name: 'r#identity', kind: 'identity' },
      { name: 'r#auth', kind: 'jwt' },
      { name: 'b', kind: 'tag' },
      { name: 'count', kind: 'counting' },
      { name: 'a', kind: 'tag' },
    ]);
    expect(plan.filters!.map((f) => f.name)).toEqual(['identity', 'jwt', 'b@r', 'count@r', 'a@r']);
    // The chain's denials are its kinds' codes; its owned headers are the union of its filters'.
    expect([...plan.denials!].sort()).toEqual(
      [
        'MTLS_REQUIRED',
        'IDENTITY_DENIED',
        'AUTH_REQUIRED',
        'INVALID_TOKEN',
        'INSUFFICIENT_SCOPE',
        'FORBIDDEN',
        'AUTH_UNAVAILABLE',
        'UPSTREAM_OVERLOADED',
      ].sort(),
    );
    expect(plan.stripHeaders).toEqual(new Set(['authorization', 'x-count']));
    expect(plan.admission).toBeNull();
  });

  it('a policy with nothing to do on a route adds no filter and no denials', () => {
    const { plans } = compile([{ name: 'r', policies: ['off'] }], { off: { kind: 'tag', on: false } });
    const plan = plans.get('r')!;
    expect(plan.filters).toBeNull();
    expect(plan.denials).toBeNull();
    expect(plan.policies).toEqual([{ name: 'off', kind: 'tag' }]);
  });

  it('shares one state among the routes that list a policy, and carries it over a reload by name and fingerprint', () => {
    Counter.built = 0;
    const policies = {
      shared: { kind: 'counting', limit: 10 },
      other: { kind: 'counting', limit: 5 },
    } satisfies Record<string, PolicyConfig>;
    const v1 = compile(
      [
        { name: 'r1', policies: ['shared', 'other'] },
        { name: 'r2', policies: ['shared'] },
      ],
      policies,
    );
    expect(Counter.built).toBe(2);
    for (const r of ['r1', 'r2']) for (const f of v1.plans.get(r)!.filters!) f.onRequest({} as never);
    const shared = v1.state.get('counting/shared') as Counter;
    const other = v1.state.get('counting/other') as Counter;
    expect(shared.count).toBe(2);

    // `other` changes its config and `shared` does not; r2 goes away.
    const v2 = compile(
      [{ name: 'r1', policies: ['shared', 'other'] }],
      { ...policies, other: { kind: 'counting', limit: 6 } },
      v1.state,
    );
    expect(v2.state.get('counting/shared')).toBe(shared);
    const other2 = v2.state.get('counting/other') as Counter;
    expect(other2).not.toBe(other);
    expect(other2.limit).toBe(6);
    v2.plans.get('r1')!.filters![0]!.onRequest({} as never);
    expect(shared.count).toBe(3);
    // The swap retires v1's state: what v2 took over stays open.
    v1.state.close();
    expect(shared.closed).toBe(false);
    expect(other.closed).toBe(true);
    v2.state.close();
    expect(shared.closed).toBe(true);
  });

  it('a compile that fails releases what it built and leaves the previous state as it was', () => {
    const v1 = compile([{ name: 'r', policies: ['c'] }], { c: { kind: 'counting', limit: 1 } });
    const c = v1.state.get('counting/c') as Counter;
    const failing: AnyPolicyKind = {
      ...tagKind,
      kind: 'failing',
      create: () => {
        throw new Error('cannot build');
      },
    };
    expect(() =>
      compilePlans(
        routes([{ name: 'r', policies: ['c', 'n', 'f'] }]),
        {
          c: { kind: 'counting', limit: 1 },
          n: { kind: 'counting', limit: 2 },
          f: { kind: 'failing', on: true },
        },
        v1.state,
        env(),
        [...KINDS, failing],
      ),
    ).toThrow(/cannot build/);
    expect(c.closed).toBe(false);
    const again = compile([{ name: 'r', policies: ['c'] }], { c: { kind: 'counting', limit: 1 } }, v1.state);
    expect(again.state.get('counting/c')).toBe(c);
  });

  it("compiles each upstream's policies into one admission gate, asked in order, sharing the policies' state with routes", async () => {
    Counter.built = 0;
    const { plans, state } = compile(
      [
        { name: 'toU', upstream: 'u', policies: ['first'] },
        { name: 'alsoToU', upstream: 'u' },
        { name: 'toV', upstream: 'v' },
      ],
      { first: { kind: 'gating', limit: 3 }, second: { kind: 'gating', limit: 1 } },
      undefined,
      { u: { policies: ['first', 'second'] }, v: {} },
    );
    // One state per policy, whether a route or an upstream lists it.
    expect(Counter.built).toBe(2);
    const gate = plans.get('toU')!.admission!;
    expect(plans.get('alsoToU')!.admission).toBe(gate);
    expect(plans.get('toV')).toBe(EMPTY_PLAN);
    expect(gate.name).toBe('first@u,second@u');
    // A route that lists nothing itself still reports the codes its upstream's gate refuses with.
    expect([...plans.get('alsoToU')!.denials!]).toEqual(['CIRCUIT_OPEN']);
    plans.get('toU')!.filters![0]!.onRequest({} as never);
    const ticket = { breakerTicket: -1 } as unknown as RequestContext;
    expect(await gate.admit(ticket)).toBeUndefined();
    // `second` refuses now (its limit is 1), so `first` counted: the route's request and two gates.
    expect((await gate.admit(ticket))?.message).toBe('second');
    expect((state.get('gating/first') as Counter).count).toBe(3);
    // `first` refuses before `second` is asked.
    expect((await gate.admit(ticket))?.message).toBe('first');
    expect((state.get('gating/second') as Counter).count).toBe(2);
  });
});
