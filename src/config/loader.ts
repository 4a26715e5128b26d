/**
 * YAML config → validated Config, or a ConfigError listing every problem with file, line and key
 * path. Steps: parse YAML into a node tree (syntax errors and duplicate keys stop here),
 * interpolate `${VAR}` in string scalars of that tree (so a variable can never inject structure),
 * convert to plain data, validate with ConfigSchema, map each issue's key path back to a line.
 */
import { readFile } from 'node:fs/promises';
import {
  type Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  parseDocument,
  type Scalar,
  type ScalarTag,
  visit,
} from 'yaml';
import type { z } from 'zod';
import { suggestKey } from './key-suggestions.ts';
import { type Config, ConfigSchema, crossCheck } from './schema.ts';

export interface ConfigIssue {
  file: string;
  /** 1-based. */
  line?: number;
  /** 1-based. */
  column?: number;
  /** Dotted key path, e.g. `routes.0.upstream`; empty for the document itself. */
  path: string;
  message: string;
}

export class ConfigError extends Error {
  readonly issues: ConfigIssue[];

  constructor(issues: ConfigIssue[]) {
    super(formatIssues(issues));
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

/** `file:line key.path: message`; `:line` is omitted when unknown, the path is `(root)` when empty. */
export function formatIssue(i: ConfigIssue): string {
  const where = i.line === undefined ? i.file : `${i.file}:${i.line}`;
  return `${where} ${i.path === '' ? '(root)' : i.path}: ${i.message}`;
}

/** One issue a line. */
export function formatIssues(issues: readonly ConfigIssue[]): string {
  return issues.map(formatIssue).join('\n');
}

/** A valid config and where its keys are in the file, for checks made after the schema. */
export interface ConfigSource {
  readonly config: Config;
  /** An issue about the key at `path` (e.g. `['listeners', 0, 'tls', 'cert']`), with its line. */
  issueAt(path: readonly (string | number)[], message: string): ConfigIssue;
}

/** Read and parse a config file. Throws ConfigError, also when the file cannot be read. */
export async function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  return (await loadConfigSource(file, env)).config;
}

/** loadConfigFile, keeping the file's layout to report later issues at their line. */
export async function loadConfigSource(
  file: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<ConfigSource> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new ConfigError([{ file, path: '', message: `cannot read config file (${reason})` }]);
  }
  return parseConfigSource(text, file, env);
}

/** Parse, interpolate and validate config text. `file` only labels the issues. Throws ConfigError. */
export function parseConfigText(text: string, file: string, env: NodeJS.ProcessEnv = process.env): Config {
  return parseConfigSource(text, file, env).config;
}

function parseConfigSource(text: string, file: string, env: NodeJS.ProcessEnv): ConfigSource {
  const lineCounter = new LineCounter();
  // uniqueKeys (the default) turns duplicate keys into errors; prettyErrors off keeps messages short.
  const doc = withPlainEnv(() => parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true }));
  const issueAt = (offset: number | undefined, path: string, message: string): ConfigIssue => {
    if (offset === undefined) return { file, path, message };
    const { line, col } = lineCounter.linePos(offset);
    return { file, line, column: col, path, message };
  };

  if (doc.errors.length > 0) {
    const issues = doc.errors.map((e) => {
      const duplicate = e.code === 'DUPLICATE_KEY';
      const path = pathAt(doc, e.pos[0], duplicate);
      const message = duplicate ? `duplicate key ${JSON.stringify(String(path.at(-1) ?? ''))}` : e.message;
      return issueAt(e.pos[0], path.join('.'), message);
    });
    throw new ConfigError(sortIssues(issues));
  }

  const failed = new Set<Node>();
  const issues: ConfigIssue[] = [];
  interpolate(doc, env, (node, message) => {
    failed.add(node);
    const offset = node.range?.[0];
    issues.push(issueAt(offset, offset === undefined ? '' : pathAt(doc, offset, true).join('.'), message));
  });

  let data: unknown;
  try {
    data = doc.toJS();
  } catch (err) {
    // e.g. an alias bomb exceeding maxAliasCount.
    issues.push(issueAt(undefined, '', (err as Error).message));
    throw new ConfigError(sortIssues(issues));
  }
  if (data === null || data === undefined) {
    issues.push(issueAt(undefined, '', 'config is empty'));
    throw new ConfigError(sortIssues(issues));
  }

  const result = ConfigSchema.safeParse(data, { error: missingKeyMessage });
  if (result.success && issues.length === 0) {
    return {
      config: result.data,
      issueAt: (path, message) => issueAt(locate(doc, path).offset, path.join('.'), message),
    };
  }
  const explained = (result.error?.issues ?? []).flatMap(explain);
  // zod skips the schema's cross-section refinement after some kinds of issue; run it here too.
  if (!result.success) explained.push(...crossCheck(data));
  const seen = new Set<string>();
  for (const { path, message } of explained) {
    const at = locate(doc, path);
    // A value whose variable was unset is already reported; its schema error would be noise.
    if (at.node && failed.has(at.node)) continue;
    const key = `${path.join('.')}\0${message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    issues.push(issueAt(at.offset, path.join('.'), message));
  }
  throw new ConfigError(sortIssues(issues));
}

/**
 * Run `fn` (synchronous) with process.env a plain object holding what the `yaml` parser reads of
 * it. The parser reads process.env.LOG_TOKENS for every token and LOG_STREAM for every document;
 * process.env reads the C environment on each access (about 0.2 µs), and a 10,000-route file has
 * 430,000 tokens: 100 ms of a load of about 1 s. Nothing else runs while `fn` does.
 */
function withPlainEnv<T>(fn: () => T): T {
  const env = process.env;
  process.env = { LOG_TOKENS: env.LOG_TOKENS, LOG_STREAM: env.LOG_STREAM };
  try {
    return fn();
  } finally {
    process.env = env;
  }
}

/** Sort by line, in place. */
export function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  // Issues without a line (whole-document problems) first; Array#sort is stable.
  return issues.sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0));
}

// ---------------------------------------------------------------------------------------------
// Interpolation

/** `$${` (escape), `${...}` (reference), or a `${` that is never closed. */
const REFERENCE_RE = /\$\$\{|\$\{([^}]*)\}|\$\{/g;
const BODY_RE = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s;

/**
 * Replace `${VAR}` / `${VAR:-default}` in every string scalar value (not in keys). `:-` applies the
 * default when VAR is unset or empty, as in POSIX shells. A substituted value is not scanned again.
 * A plain (unquoted, untagged) scalar that changed is re-resolved with the document's own YAML
 * schema, and becomes a number or boolean if the schema resolves it to one (`${RATIO:-0.1}` →
 * 0.1, `${ON:-true}` → true). Nothing else is retyped: an empty or `null` result stays a string,
 * and `[...]`/`{...}` stay strings since only scalar tags are consulted.
 */
function interpolate(
  doc: Document,
  env: NodeJS.ProcessEnv,
  report: (node: Node, message: string) => void,
): void {
  visit(doc, {
    Scalar(key, node) {
      if (key === 'key' || typeof node.value !== 'string' || !node.value.includes('${')) return;
      const problems: string[] = [];
      const value = node.value.replace(REFERENCE_RE, (match: string, body: string | undefined) => {
        if (match === '$${') return '${';
        if (body === undefined) {
          problems.push('unterminated ${ (write $${ for a literal ${)');
          return '';
        }
        const ref = BODY_RE.exec(body);
        if (!ref) {
          problems.push(
            `invalid reference \${${body}} (use \${VAR} or \${VAR:-default}; $\${ for a literal \${)`,
          );
          return '';
        }
        const name = ref[1]!;
        const fallback = ref[2];
        const set = env[name];
        if (fallback !== undefined) return set === undefined || set === '' ? fallback : set;
        if (set === undefined) {
          problems.push(`environment variable ${name} is not set`);
          return '';
        }
        return set;
      });
      for (const p of problems) report(node, p);
      node.value = node.type === 'PLAIN' && !node.tag ? resolvePlain(doc, value) : value;
    },
  });
}

/** The YAML schema's own implicit resolution of a plain scalar, kept only for numbers and booleans. */
function resolvePlain(doc: Document, value: string): unknown {
  for (const tag of doc.schema.tags) {
    if (tag.collection || !tag.default) continue;
    const scalarTag = tag as ScalarTag;
    if (!scalarTag.test?.test(value)) continue;
    let failed = false;
    const resolved = scalarTag.resolve(
      value,
      () => {
        failed = true;
      },
      doc.options,
    );
    // Some tags (float) return a Scalar node carrying formatting hints rather than the bare value.
    const v = isScalar(resolved) ? resolved.value : resolved;
    return !failed && (typeof v === 'number' || typeof v === 'boolean') ? v : value;
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Zod issues → messages and key paths

type Segment = string | number;

/** Per-parse error map: a missing key says so instead of "expected string, received undefined". */
function missingKeyMessage(iss: z.core.$ZodRawIssue): string | undefined {
  return iss.code === 'invalid_type' && iss.input === undefined ? 'required key is missing' : undefined;
}

/** One zod issue as one or more (path, message); unknown keys get one entry each at the key. */
function explain(zi: z.core.$ZodIssue): Array<{ path: Segment[]; message: string }> {
  const path = zi.path.map((p) => (typeof p === 'number' ? p : String(p)));
  switch (zi.code) {
    case 'unrecognized_keys':
      return zi.keys.map((k) => {
        const near = suggestKey(path, k);
        const hint = near === undefined ? '' : `; did you mean ${JSON.stringify(near)}?`;
        return { path: [...path, k], message: `unknown key ${JSON.stringify(k)}${hint}` };
      });
    case 'invalid_key': {
      const key = path.at(-1);
      const inner = zi.issues.map((i) => i.message).join('; ');
      return [{ path, message: `invalid key ${JSON.stringify(key)}: ${inner}` }];
    }
    default:
      return [{ path, message: zi.message }];
  }
}

/**
 * The YAML node at `path`, or the nearest existing ancestor. `offset` points at the key for map
 * entries (a block value may start on the next line), at the item for sequence entries, and at
 * the closest ancestor when the path does not exist (a missing key: its parent mapping).
 */
function locate(doc: Document, path: readonly Segment[]): { node?: Node; offset?: number } {
  let node: unknown = doc.contents;
  let offset = (node as Node | null)?.range?.[0];
  for (const seg of path) {
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) return { offset };
      offset = (pair.key as Scalar).range?.[0] ?? offset;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number' && seg < node.items.length) {
      node = node.items[seg];
      offset = (node as Node | null)?.range?.[0] ?? offset;
    } else {
      return { offset };
    }
  }
  return { node: (node as Node | null) ?? undefined, offset };
}

/**
 * Key path to the innermost node whose source range contains `offset`. With `leaf` false the
 * path stops at the innermost collection: inside a syntax error the scalars are unreliable.
 */
function pathAt(doc: Document, offset: number, leaf: boolean): Segment[] {
  const path: Segment[] = [];
  const within = (n: unknown): boolean => {
    const r = (n as Node | null)?.range;
    return !!r && r[0] <= offset && offset < Math.max(r[2], r[0] + 1);
  };
  const enter = (n: unknown): boolean => leaf || isMap(n) || isSeq(n);
  let node: unknown = doc.contents;
  for (;;) {
    if (isMap(node)) {
      const pair = node.items.find((p) => within(p.key) || within(p.value));
      if (!pair || !isScalar(pair.key)) return path;
      if (within(pair.key)) {
        if (leaf) path.push(String(pair.key.value));
        return path;
      }
      if (!enter(pair.value)) return path;
      path.push(String(pair.key.value));
      node = pair.value;
    } else if (isSeq(node)) {
      const i = node.items.findIndex(within);
      if (i < 0 || !enter(node.items[i])) return path;
      path.push(i);
      node = node.items[i];
    } else {
      return path;
    }
  }
}
