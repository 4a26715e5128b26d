/**
 * Configuration of route policies: the top-level `policies` map (named policies, each `{ kind,
 * ...settings }` checked by its kind's schema) and the checks that span sections: a route's
 * `policies` name existing policies, a kind that allows one policy per route gets one, and each
 * kind's own cross-check (e.g. that a JWT policy's providers exist), at the key path of the
 * problem. Built from the registry (kinds.ts).
 */
import { z } from 'zod';
import { isRecord } from '../../config/fields.ts';
import type { PolicyIssue } from './filter.ts';
import { type AnyPolicyKind, POLICY_KINDS } from './kinds.ts';

/** A named policy as validated: its kind, and its settings with defaults applied. */
export interface PolicyConfig {
  readonly kind: string;
  readonly [setting: string]: unknown;
}

const KIND_NAMES = POLICY_KINDS.map((k) => k.kind);

function byKind(kinds: readonly AnyPolicyKind[]): ReadonlyMap<string, AnyPolicyKind> {
  return new Map(kinds.map((k) => [k.kind, k]));
}

const KINDS = byKind(POLICY_KINDS);

/** The kind named `kind` in the registry. */
export function policyKind(kind: string): AnyPolicyKind | undefined {
  return KINDS.get(kind);
}

/** One named policy: `kind` picks the schema its other keys are checked against. */
export const PolicySchema: z.ZodType<PolicyConfig> = z.discriminatedUnion(
  'kind',
  POLICY_KINDS.map((k) => k.schema.safeExtend({ kind: z.literal(k.kind) })) as unknown as [
    z.ZodObject,
    ...z.ZodObject[],
  ],
  {
    error: (iss) => {
      if (iss.code !== 'invalid_union') return undefined;
      const kind = (iss.input as { kind?: unknown } | undefined)?.kind;
      const known = `kinds: ${KIND_NAMES.join(', ')}`;
      return kind === undefined
        ? `required key is missing (${known})`
        : `unknown policy kind ${JSON.stringify(kind)} (${known})`;
    },
  },
) as unknown as z.ZodType<PolicyConfig>;

/**
 * The policies a route's chain holds, in order: its inline ones (`identity:`, `auth:`, in
 * registry order), then its `policies` list. Entries whose kind cannot be told are left out.
 * Reads defensively: it may run on unvalidated input.
 */
export function routeChain(
  route: Record<string, unknown>,
  policies: Record<string, unknown> | undefined,
  kinds: readonly AnyPolicyKind[] = POLICY_KINDS,
): { kind: AnyPolicyKind; name: string | undefined; settings: unknown; path: (string | number)[] }[] {
  const known = kinds === POLICY_KINDS ? KINDS : byKind(kinds);
  const chain: ReturnType<typeof routeChain> = [];
  for (const kind of kinds) {
    const key = kind.routeKey;
    if (key !== undefined && route[key] !== undefined)
      chain.push({ kind, name: undefined, settings: route[key], path: [key] });
  }
  const refs = route.policies;
  if (!Array.isArray(refs) || policies === undefined) return chain;
  const listed = new Set<string>();
  refs.forEach((ref: unknown, j) => {
    if (typeof ref !== 'string' || !Object.hasOwn(policies, ref) || listed.has(ref)) return;
    listed.add(ref);
    const settings = policies[ref];
    const kind =
      isRecord(settings) && typeof settings.kind === 'string' ? known.get(settings.kind) : undefined;
    if (kind !== undefined) chain.push({ kind, name: ref, settings, path: ['policies', j] });
  });
  return chain;
}

/**
 * Cross-checks of the policies of a whole config: each named policy's kind check at
 * `policies.<name>`; per route: its `policies` name existing policies, once each, a kind that
 * allows one policy per route gets at most one (inline or named), and each kind's check of its
 * place in the chain; per upstream: its `policies` name existing policies, once each, of kinds
 * that can apply at admission.
 */
export function checkPolicies(cfg: Record<string, unknown>, issues: PolicyIssue[]): void {
  // `policies` absent means none; of the wrong type, references cannot be judged (no cascade).
  const policies = cfg.policies === undefined ? {} : isRecord(cfg.policies) ? cfg.policies : undefined;
  if (policies !== undefined) {
    for (const [name, p] of Object.entries(policies)) {
      if (!isRecord(p) || typeof p.kind !== 'string') continue;
      policyKind(p.kind)?.check?.(p, cfg, ['policies', name], issues);
    }
  }
  const routes = Array.isArray(cfg.routes) ? cfg.routes : [];
  routes.forEach((r: unknown, i) => {
    if (!isRecord(r)) return;
    if (Array.isArray(r.policies) && policies !== undefined)
      checkReferences(r.policies, policies, ['routes', i, 'policies'], issues);
    const seen = new Map<string, string>();
    const before: string[] = [];
    for (const link of routeChain(r, policies)) {
      const path = ['routes', i, ...link.path];
      if (link.name === undefined) link.kind.check?.(link.settings, cfg, path, issues);
      link.kind.checkPlacement?.(link.settings, { before }, path, issues);
      before.push(link.kind.kind);
      if (!link.kind.onePerRoute) continue;
      const earlier = seen.get(link.kind.kind);
      const here = link.name ?? link.path[0]!;
      if (earlier !== undefined)
        issues.push({
          path,
          message: `a route takes one ${link.kind.kind} policy; it has ${earlier} already`,
        });
      else seen.set(link.kind.kind, String(here));
    }
  });
  if (!isRecord(cfg.upstreams) || policies === undefined) return;
  for (const [upstream, u] of Object.entries(cfg.upstreams)) {
    if (!isRecord(u) || !Array.isArray(u.policies)) continue;
    const path = ['upstreams', upstream, 'policies'];
    checkReferences(u.policies, policies, path, issues);
    u.policies.forEach((ref: unknown, j) => {
      if (typeof ref !== 'string' || !Object.hasOwn(policies, ref)) return;
      const settings = policies[ref];
      const kind =
        isRecord(settings) && typeof settings.kind === 'string' ? policyKind(settings.kind) : undefined;
      if (kind === undefined) return;
      if (kind.createGate === undefined)
        issues.push({
          path: [...path, j],
          message: `a ${kind.kind} policy applies to routes only (upstreams take: ${GATE_KINDS.join(', ')})`,
        });
      else kind.checkPlacement?.(settings, { upstream }, [...path, j], issues);
    });
  }
}

/** Kinds that can apply at an upstream's admission. */
const GATE_KINDS = POLICY_KINDS.filter((k) => k.createGate !== undefined).map((k) => k.kind);

/** A list of policy names: each must exist, once. */
function checkReferences(
  refs: unknown[],
  policies: Record<string, unknown>,
  path: (string | number)[],
  issues: PolicyIssue[],
): void {
  const listed = new Set<string>();
  refs.forEach((ref: unknown, j) => {
    if (typeof ref !== 'string') return;
    if (!Object.hasOwn(policies, ref))
      issues.push({ path: [...path, j], message: `unknown policy ${JSON.stringify(ref)}` });
    else if (listed.has(ref)) issues.push({ path: [...path, j], message: `policy ${ref} is listed twice` });
    listed.add(ref);
  });
}
