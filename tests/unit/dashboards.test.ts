/**
 * Static checks of every dashboard in dashboards/: valid JSON, unique uids, every panel titled and
 * queried through the dashboard's datasource variable, every metric it names exported by the
 * gateway. tests/integration/dashboards.test.ts runs the same queries against a real Prometheus.
 */
import { describe, expect, it } from 'vitest';
import { CIRCUIT_STATES } from '../../src/telemetry/metrics.ts';
import {
  dashboardFiles,
  exportedFamilies,
  exportedNames,
  labelMatchers,
  loadDashboard,
  loadDashboards,
  metricNames,
  panelsOf,
  parseLabelValues,
  targetsOf,
  variableQuery,
  variableRefs,
  variablesOf,
} from '../helpers/dashboards.ts';

const files = dashboardFiles();
const builtins = (name: string) => name.startsWith('__');

describe('dashboards', () => {
  it('dashboards/ holds at least one dashboard', () => {
    expect(files.length).toBeGreaterThan(0);
  });

  it('every dashboard has a unique uid and a title', () => {
    const uids = new Map<string, string>();
    for (const file of files) {
      const { dashboard } = loadDashboard(file);
      expect(dashboard.uid, `${file}: uid`).toMatch(/^[a-zA-Z0-9_-]{1,40}$/);
      expect(dashboard.title, `${file}: title`).toBeTruthy();
      expect(dashboard.schemaVersion ?? 0, `${file}: schemaVersion`).toBeGreaterThanOrEqual(39);
      const other = uids.get(dashboard.uid!);
      expect(other, `${file}: uid ${dashboard.uid} also used by ${other}`).toBeUndefined();
      uids.set(dashboard.uid!, file);
    }
  });

  describe.each(files)('%s', (file) => {
    const d = loadDashboard(file);
    const variables = variablesOf(d);
    const variableNames = new Set(variables.map((v) => v.name));

    it('has a Prometheus datasource variable that every panel and target uses', () => {
      const ds = variables.find((v) => v.type === 'datasource');
      expect(ds, `${file}: no datasource template variable`).toBeDefined();
      expect(variableQuery(ds!)).toBe('prometheus');
      const uses = `\${${ds!.name}}`;
      for (const { panel, where } of panelsOf(d)) {
        expect(panel.datasource, `${where}: datasource`).toMatchObject({ type: 'prometheus', uid: uses });
      }
      for (const { target, where } of targetsOf(d)) {
        expect(target.datasource, `${where}: datasource`).toMatchObject({ type: 'prometheus', uid: uses });
      }
    });

    it('every panel has a title, a position and at least one query; ids are unique', () => {
      const ids = new Set<number>();
      const panels = panelsOf(d);
      expect(panels.length).toBeGreaterThan(0);
      for (const { panel, where } of panels) {
        expect(panel.title?.trim(), `${where}: title`).toBeTruthy();
        expect(panel.gridPos, `${where}: gridPos`).toBeDefined();
        expect(panel.targets?.length ?? 0, `${where}: no targets`).toBeGreaterThan(0);
        expect(ids.has(panel.id!), `${where}: duplicate id`).toBe(false);
        ids.add(panel.id!);
        const refIds = (panel.targets ?? []).map((t) => t.refId);
        expect(new Set(refIds).size, `${where}: duplicate refIds ${refIds.join(',')}`).toBe(refIds.length);
      }
      for (const { target, where } of targetsOf(d)) {
        expect(target.expr?.trim(), `${where}: expr`).toBeTruthy();
        expect(target.legendFormat?.trim(), `${where}: legendFormat`).toBeTruthy();
      }
    });

    it('rate windows use Grafana interval variables; template variables are matched with =~', () => {
      for (const { target, where } of targetsOf(d)) {
        const expr = target.expr ?? '';
        for (const m of expr.matchAll(
          /\b(rate|irate|increase|delta|idelta|deriv)\s*\((?:[^()]|\([^()]*\))*?\[([^\]]*)\]/g,
        )) {
          expect(m[2], `${where}: ${m[1]}() window ${m[2]} should be $__rate_interval (or $__range)`).toMatch(
            /^\$__(rate_interval|range|interval)$/,
          );
        }
        for (const { label, op, value } of labelMatchers(expr)) {
          const refs = variableRefs(value).filter((r) => !builtins(r));
          if (refs.length === 0) continue;
          expect(
            op,
            `${where}: ${label}${op}"${value}" needs =~ (multi-value variables expand to a regex)`,
          ).toMatch(/^(=~|!~)$/);
        }
        for (const ref of variableRefs(expr)) {
          if (!builtins(ref)) expect(variableNames.has(ref), `${where}: unknown variable $${ref}`).toBe(true);
        }
      }
    });

    it('every metric named in a query or variable is exported by the gateway', async () => {
      const exported = await exportedNames();
      const missing: string[] = [];
      for (const { target, where } of targetsOf(d)) {
        for (const name of metricNames(target.expr ?? '')) {
          if (!exported.has(name)) missing.push(`${where}: ${name}`);
        }
      }
      for (const v of variables.filter((x) => x.type === 'query')) {
        const lv = parseLabelValues(variableQuery(v) ?? '');
        expect(lv, `variable ${v.name}: only label_values(metric, label) queries are checked`).toBeDefined();
        for (const name of metricNames(lv!.selector ?? '')) {
          if (!exported.has(name)) missing.push(`variable ${v.name}: ${name}`);
        }
      }
      expect(missing, 'metrics the gateway does not export (see src/telemetry/metrics.ts)').toEqual([]);
    });
  });

  describe('the resilience dashboard', () => {
    const file = 'peregrine-resilience.json';

    it('is one of the dashboards checked above', () => {
      expect(files).toContain(file);
      expect(loadDashboard(file).dashboard.uid).toBe('peregrine-resilience');
    });

    it('charts every upstream metric (peregrine_upstream_*) the gateway exports', async () => {
      const d = loadDashboard(file);
      const charted = new Set(targetsOf(d).flatMap(({ target }) => metricNames(target.expr ?? '')));
      // peregrine_upstream_tls_* are TLS, not resilience: the mesh dashboard charts them.
      const upstreamFamilies = [...(await exportedFamilies())].filter(
        ([name]) => name.startsWith('peregrine_upstream_') && !name.startsWith('peregrine_upstream_tls_'),
      );
      expect(upstreamFamilies.length).toBeGreaterThan(10);
      const missing = upstreamFamilies
        .map(([name, type]) => (type === 'histogram' ? `${name}_bucket` : name))
        .filter((series) => !charted.has(series));
      expect(missing, `${file}: upstream metrics without a panel`).toEqual([]);
    });

    it('names every circuit breaker state (CIRCUIT_STATES) on the breaker state panel', () => {
      const d = loadDashboard(file);
      const statePanels = panelsOf(d).filter(({ panel }) =>
        (panel.targets ?? []).some((t) =>
          metricNames(t.expr ?? '').includes('peregrine_upstream_circuit_state'),
        ),
      );
      const timeline = statePanels.find(({ panel }) => panel.type === 'state-timeline');
      expect(timeline, `${file}: no state-timeline panel of peregrine_upstream_circuit_state`).toBeDefined();
      const mapped = new Map<string, string | undefined>();
      for (const m of timeline!.panel.fieldConfig?.defaults?.mappings ?? []) {
        if (m.type !== 'value') continue;
        for (const [value, { text }] of Object.entries(m.options ?? {})) mapped.set(value, text);
      }
      // The gauge's value is the index into CIRCUIT_STATES; the text may spell `_` as `-` or a space.
      expect(
        CIRCUIT_STATES.map((_, i) => [i, mapped.get(String(i))?.replace(/[- ]/g, '_')]),
        `${timeline!.where}: value mappings`,
      ).toEqual(CIRCUIT_STATES.map((state, i) => [i, state]));
    });
  });

  it('the PromQL helpers see through functions, groupings, strings and ranges', () => {
    expect(
      metricNames(
        'histogram_quantile(0.99, sum by (route, le) (rate(a_bucket{route=~"$route"}[$__rate_interval]))) / on (x) group_left (y) b offset 5m or time() - c',
      ).sort(),
    ).toEqual(['a_bucket', 'b', 'c']);
    expect(labelMatchers('x{a=~"$a", b="c", d!="{e}"}')).toEqual([
      { label: 'a', op: '=~', value: '$a' },
      { label: 'b', op: '=', value: 'c' },
      { label: 'd', op: '!=', value: '{e}' },
    ]);
    expect(parseLabelValues('label_values(m{a="b"}, route)')).toEqual({
      selector: 'm{a="b"}',
      label: 'route',
    });
    expect(parseLabelValues('label_values(route)')).toEqual({ selector: undefined, label: 'route' });
    expect(loadDashboards().length).toBe(files.length);
  });
});
