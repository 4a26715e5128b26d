/**
 * "did you mean ...?" for an unknown key in the config file: the known key at that place nearest
 * to the one written (edit distance, letter case ignored), read from the config's JSON Schema,
 * which lists the keys of every section, unions included. Computed only when a file has an
 * unknown key.
 */
import { z } from 'zod';
import { ConfigSchema } from './schema.ts';

/** The JSON Schema of the config file's input side (what `peregrine schema` prints). */
export function configInputJsonSchema(): Record<string, unknown> {
  // Transforms (durations, sizes) cannot be expressed; `any` keeps their input side as written.
  return z.toJSONSchema(ConfigSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
}

interface SchemaNode {
  properties?: Record<string, SchemaNode>;
  additionalProperties?: SchemaNode | boolean;
  items?: SchemaNode;
  anyOf?: SchemaNode[];
  oneOf?: SchemaNode[];
}

let schema: SchemaNode | undefined;

/** The schema nodes a path may lead to (several through unions). */
function nodesAt(path: readonly (string | number)[]): SchemaNode[] {
  schema ??= configInputJsonSchema() as SchemaNode;
  let nodes = expand([schema]);
  for (const seg of path) {
    const next: SchemaNode[] = [];
    for (const n of nodes) {
      const named = typeof seg === 'string' ? n.properties?.[seg] : undefined;
      if (named !== undefined) next.push(named);
      else if (typeof seg === 'number' && n.items !== undefined) next.push(n.items);
      else if (typeof n.additionalProperties === 'object') next.push(n.additionalProperties);
    }
    nodes = expand(next);
  }
  return nodes;
}

/** Nodes with the options of their unions added. */
function expand(nodes: SchemaNode[]): SchemaNode[] {
  const out: SchemaNode[] = [];
  const visit = (n: SchemaNode): void => {
    out.push(n);
    for (const option of [...(n.anyOf ?? []), ...(n.oneOf ?? [])]) visit(option);
  };
  for (const n of nodes) visit(n);
  return out;
}

/** The keys the config accepts in the mapping at `path`. */
export function knownKeys(path: readonly (string | number)[]): string[] {
  const keys = new Set<string>();
  for (const n of nodesAt(path)) for (const k of Object.keys(n.properties ?? {})) keys.add(k);
  return [...keys];
}

/** Levenshtein distance (insertions, deletions, substitutions), letter case ignored. */
export function editDistance(a: string, b: string): number {
  const s = a.toLowerCase();
  const t = b.toLowerCase();
  let previous = Array.from({ length: t.length + 1 }, (_, j) => j);
  for (let i = 1; i <= s.length; i++) {
    const current = [i];
    for (let j = 1; j <= t.length; j++) {
      const substitution = previous[j - 1]! + (s[i - 1] === t[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution));
    }
    previous = current;
  }
  return previous[t.length]!;
}

/**
 * The known key at `path` closest to `key`, when it is close enough to be a slip (at most 2
 * edits, or a third of the key's length for long keys); undefined otherwise.
 */
export function suggestKey(path: readonly (string | number)[], key: string): string | undefined {
  const limit = Math.max(2, Math.floor(key.length / 3));
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const candidate of knownKeys(path)) {
    const d = editDistance(key, candidate);
    if (d < bestDistance || (d === bestDistance && best !== undefined && candidate < best)) {
      best = candidate;
      bestDistance = d;
    }
  }
  return bestDistance <= limit ? best : undefined;
}
