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
 * `policies.<name>`, and per route: its `policies` name existing policies, once each, and a kind
 * that allows one policy per route gets at most one (inline or named).
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
    if (Array.isArray(r.policies) && policies !== undefined) {
      const listed = new Set<string>();
      r.policies.forEach((ref: unknown, j) => {
        if (typeof ref !== 'string') return;
        if (!Object.hasOwn(policies, ref))
          issues.push({
            path: ['routes', i, 'policies', j],
            message: `unknown policy ${JSON.stringify(ref)}`,
          });
        else if (listed.has(ref))
          issues.push({ path: ['routes', i, 'policies', j], message: `policy ${ref} is listed twice` });
        listed.add(ref);
      });
    }
    const seen = new Map<string, string>();
    for (const link of routeChain(r, policies)) {
      if (link.name === undefined) link.kind.check?.(link.settings, cfg, ['routes', i, ...link.path], issues);
      if (!link.kind.onePerRoute) continue;
      const earlier = seen.get(link.kind.kind);
      const here = link.name ?? link.path[0]!;
      if (earlier !== undefined)
        issues.push({
          path: ['routes', i, ...link.path],
          message: `a route takes one ${link.kind.kind} policy; it has ${earlier} already`,
        });
      else seen.set(link.kind.kind, String(here));
    }
  });
}
