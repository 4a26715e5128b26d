/**
 * Every Prometheus file shipped in deployment/prometheus/ passes promtool: `check config` for a
 * configuration (with the rule files it names), `check rules` for a rules file. promtool comes
 * with the Prometheus the README recommends (Debian's `prometheus` package), found like every
 * tool the tests run (tests/helpers/tools.ts). Rules may only name metrics the gateway exports,
 * and the recording rules pass their unit tests in tests/prometheus/ (`promtool test rules`).
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { exportedNames, metricNames } from '../helpers/dashboards.ts';
import { findTool, PROMTOOL } from '../helpers/tools.ts';

const DIR = join(import.meta.dirname, '../../deployment/prometheus');

const files = readdirSync(DIR)
  .filter((f) => /\.ya?ml$/.test(f))
  .sort();

/** Unit tests of the rules (`promtool test rules`), kept out of deployment/. */
const RULE_TESTS = join(import.meta.dirname, '../prometheus');
const ruleTests = readdirSync(RULE_TESTS)
  .filter((f) => f.endsWith('.test.yml'))
  .sort();

/** A rules file has `groups`; anything else here is a Prometheus configuration. */
function kindOf(file: string): 'rules' | 'config' {
  const doc = parse(readFileSync(join(DIR, file), 'utf8')) as Record<string, unknown> | null;
  return doc !== null && 'groups' in doc ? 'rules' : 'config';
}

interface RuleFile {
  groups: { name: string; rules: { alert?: string; record?: string; expr: string }[] }[];
}

describe('deployment/prometheus', () => {
  it('ships a configuration, the alert rules and the OpenTelemetry recording rules', () => {
    expect(files.map(kindOf).sort()).toEqual(['config', 'rules', 'rules']);
  });

  it.each(ruleTests)('%s: promtool test rules passes', (file) => {
    const promtool = findTool(PROMTOOL, 'the Prometheus configuration test');
    const run = spawnSync(promtool.path, ['test', 'rules', file], {
      cwd: RULE_TESTS,
      encoding: 'utf8',
      env: promtool.env,
    });
    expect(run.status, `promtool test rules ${file}\n${run.stdout}${run.stderr}`).toBe(0);
  });

  it.each(files)('%s passes promtool', (file) => {
    const promtool = findTool(PROMTOOL, 'the Prometheus configuration test');
    const kind = kindOf(file);
    const run = spawnSync(promtool.path, ['check', kind, file], {
      cwd: DIR,
      encoding: 'utf8',
      env: promtool.env,
    });
    expect(run.status, `promtool check ${kind} ${file}\n${run.stdout}${run.stderr}`).toBe(0);
  });

  it.each(files.filter((f) => kindOf(f) === 'rules'))(
    '%s names only metrics the gateway exports',
    async (file) => {
      const exported = await exportedNames();
      const doc = parse(readFileSync(join(DIR, file), 'utf8')) as RuleFile;
      const unknown: string[] = [];
      for (const group of doc.groups) {
        for (const rule of group.rules) {
          for (const name of metricNames(rule.expr)) {
            if (!exported.has(name)) unknown.push(`${rule.alert ?? rule.record}: ${name}`);
          }
        }
      }
      expect(unknown).toEqual([]);
    },
  );
});
