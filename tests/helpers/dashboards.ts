/**
 * Read the Grafana dashboards in dashboards/ for tests: every panel (rows and collapsed rows
 * included), every query target, the template variables, and the PromQL helpers the checks need
 * (metric names in an expression, label matchers that use a variable, variable substitution).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createMetrics, renderMetrics } from '../../src/telemetry/metrics.ts';

export const DASHBOARD_DIR = fileURLToPath(new URL('../../dashboards/', import.meta.url));

export interface GrafanaTarget {
  refId?: string;
  expr?: string;
  legendFormat?: string;
  exemplar?: boolean;
  instant?: boolean;
  datasource?: { type?: string; uid?: string } | string | null;
  hide?: boolean;
}

export interface GrafanaPanel {
  id?: number;
  type?: string;
  title?: string;
  collapsed?: boolean;
  gridPos?: { h: number; w: number; x: number; y: number };
  datasource?: { type?: string; uid?: string } | string | null;
  fieldConfig?: { defaults?: { mappings?: GrafanaValueMapping[] } };
  targets?: GrafanaTarget[];
  panels?: GrafanaPanel[];
}

/** A value mapping (`type: value`): raw value → displayed text and colour. */
export interface GrafanaValueMapping {
  type?: string;
  options?: Record<string, { text?: string; color?: string; index?: number }>;
}

export interface GrafanaVariable {
  name: string;
  type: string;
  query?: string | { query?: string };
  definition?: string;
  multi?: boolean;
  includeAll?: boolean;
  current?: { value?: unknown };
}

export interface Dashboard {
  uid?: string;
  title?: string;
  schemaVersion?: number;
  panels?: GrafanaPanel[];
  /** Pre-5.0 layout; read so an old export still gets checked. */
  rows?: { title?: string; panels?: GrafanaPanel[] }[];
  templating?: { list?: GrafanaVariable[] };
}

export interface LoadedDashboard {
  /** File name inside dashboards/. */
  readonly file: string;
  readonly dashboard: Dashboard;
}

/** A panel with where it sits, for messages: `peregrine-overview.json › row "Latency" › panel "p99" (id 7)`. */
export interface LocatedPanel {
  readonly panel: GrafanaPanel;
  readonly where: string;
}

export interface LocatedTarget {
  readonly target: GrafanaTarget;
  readonly panel: GrafanaPanel;
  readonly where: string;
}

/** The JSON files in dashboards/, sorted. */
export function dashboardFiles(dir = DASHBOARD_DIR): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort();
}

export function loadDashboard(file: string, dir = DASHBOARD_DIR): LoadedDashboard {
  const text = readFileSync(join(dir, file), 'utf8');
  try {
    return { file, dashboard: JSON.parse(text) as Dashboard };
  } catch (err) {
    throw new Error(`${file}: not valid JSON: ${(err as Error).message}`);
  }
}

export function loadDashboards(dir = DASHBOARD_DIR): LoadedDashboard[] {
  return dashboardFiles(dir).map((f) => loadDashboard(f, dir));
}

function describePanel(p: GrafanaPanel): string {
  return `${p.type === 'row' ? 'row' : 'panel'} ${JSON.stringify(p.title ?? '(untitled)')} (id ${p.id ?? '?'})`;
}

/**
 * Every panel except row headers, with its location. A row's panels are nested in `panels` when
 * the row is collapsed and follow it at the top level when it is open; both are covered, to any
 * depth.
 */
export function panelsOf(d: LoadedDashboard): LocatedPanel[] {
  const out: LocatedPanel[] = [];
  const walk = (panels: GrafanaPanel[] | undefined, prefix: string): void => {
    let row: string | undefined;
    for (const p of panels ?? []) {
      if (p.type === 'row') {
        row = `${prefix} › ${describePanel(p)}`;
        walk(p.panels, row);
        continue;
      }
      const where = `${row ?? prefix} › ${describePanel(p)}`;
      out.push({ panel: p, where });
      // Library/nested panel containers.
      if (p.panels !== undefined) walk(p.panels, where);
    }
  };
  walk(d.dashboard.panels, d.file);
  for (const [i, r] of (d.dashboard.rows ?? []).entries()) {
    walk(r.panels, `${d.file} › rows[${i}] ${JSON.stringify(r.title ?? '')}`);
  }
  return out;
}

/** Every query target with an expression (hidden ones included: they still run in Grafana). */
export function targetsOf(d: LoadedDashboard): LocatedTarget[] {
  return panelsOf(d).flatMap(({ panel, where }) =>
    (panel.targets ?? []).map((target) => ({
      target,
      panel,
      where: `${where} › target ${target.refId ?? '?'}`,
    })),
  );
}

export function variablesOf(d: LoadedDashboard): GrafanaVariable[] {
  return d.dashboard.templating?.list ?? [];
}

/** The query text of a variable (Grafana stores either a string or `{query: string}`). */
export function variableQuery(v: GrafanaVariable): string | undefined {
  if (typeof v.query === 'string') return v.query;
  return v.query?.query ?? v.definition;
}

/** `label_values(metric{...}, label)` or `label_values(label)`. */
export function parseLabelValues(query: string): { selector: string | undefined; label: string } | undefined {
  const m = /^\s*label_values\(\s*(?:(.*?)\s*,\s*)?([a-zA-Z_]\w*)\s*\)\s*$/s.exec(query);
  if (!m) return undefined;
  return { selector: m[1] || undefined, label: m[2]! };
}

/** `$name`, `${name}`, `${name:format}`, `[[name]]`, `[[name:format]]`. */
const VARIABLE_REF = /\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)/g;

export function variableRefs(text: string): string[] {
  return [...text.matchAll(VARIABLE_REF)].map((m) => (m[1] ?? m[2] ?? m[3])!);
}

/**
 * Replace Grafana's variables the way Grafana would before sending the query: built-ins
 * (`$__rate_interval`, ...) from `builtins`, dashboard variables by type (interval/constant: their
 * value; query/custom and anything else: `.*`, i.e. "All"). An unknown built-in throws, so a new
 * one gets a deliberate mapping rather than an invalid query.
 */
export function substituteVariables(
  expr: string,
  variables: GrafanaVariable[],
  builtins: Readonly<Record<string, string>>,
): string {
  const byName = new Map(variables.map((v) => [v.name, v]));
  return expr.replace(VARIABLE_REF, (whole, a?: string, b?: string, c?: string) => {
    const name = (a ?? b ?? c)!;
    if (name.startsWith('__')) {
      const value = builtins[name];
      if (value === undefined) throw new Error(`no test value for Grafana built-in variable ${whole}`);
      return value;
    }
    const v = byName.get(name);
    if (v === undefined) throw new Error(`${whole} is not a variable of this dashboard`);
    if (v.type === 'interval' || v.type === 'constant') {
      const first = variableQuery(v)?.split(',')[0]?.trim();
      if (!first) throw new Error(`variable ${name} (${v.type}) has no value`);
      return first;
    }
    return '.*';
  });
}

/** Label matchers (`label op "value"`) inside the selectors of `expr`. */
export function labelMatchers(expr: string): { label: string; op: string; value: string }[] {
  const out: { label: string; op: string; value: string }[] = [];
  for (const sel of expr.matchAll(/\{((?:[^{}"]|"(?:[^"\\]|\\.)*")*)\}/g)) {
    for (const m of sel[1]!.matchAll(/([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g)) {
      out.push({ label: m[1]!, op: m[2]!, value: m[3]! });
    }
  }
  return out;
}

const PROMQL_WORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'and',
  'or',
  'unless',
  'offset',
  'inf',
  'nan',
]);

/**
 * Metric names an expression selects (identifiers that are not functions, keywords, label names,
 * strings or durations). Good enough for the dashboards' PromQL; `{__name__=...}` selectors are
 * not resolved.
 */
export function metricNames(expr: string): string[] {
  let s = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
  s = s.replace(/\{[^}]*\}/g, '{}');
  s = s.replace(/\[[^\]]*\]/g, '[]');
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/gi, ' ');
  const names = new Set<string>();
  for (const m of s.matchAll(/(?<![\w$.])[a-zA-Z_:][\w:]*/g)) {
    const rest = s.slice(m.index + m[0].length);
    if (/^\s*\(/.test(rest)) continue;
    if (PROMQL_WORDS.has(m[0].toLowerCase())) continue;
    names.add(m[0]);
  }
  return [...names];
}

/** Series Prometheus itself adds to every scrape; a dashboard may use them. */
const SCRAPE_SERIES = ['up', 'scrape_duration_seconds', 'scrape_samples_scraped', 'scrape_series_added'];

/** Every metric family the gateway's registry exports: name → type (counter, gauge, histogram, ...). */
export async function exportedFamilies(): Promise<Map<string, string>> {
  const metrics = createMetrics({ exemplars: true, version: 'test' });
  // Registered on first use (by a gateway with Redis, with a registry, with rate limits).
  void metrics.redis;
  void metrics.registryMetrics;
  void metrics.rateLimits;
  const { body } = await renderMetrics(metrics, undefined);
  const families = new Map<string, string>();
  for (const m of body.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = m as unknown as [string, string, string];
    families.set(name, type);
  }
  return families;
}

/** Every series name the gateway's registry can export, histogram and counter suffixes included. */
export async function exportedNames(): Promise<Set<string>> {
  const names = new Set<string>(SCRAPE_SERIES);
  for (const [name, type] of await exportedFamilies()) {
    names.add(name);
    if (type === 'histogram' || type === 'summary') {
      for (const suffix of ['_bucket', '_sum', '_count']) names.add(name + suffix);
    }
  }
  return names;
}
