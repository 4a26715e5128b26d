/**
 * The README and docs/ link only to files that exist in the repository: a reader of a checkout
 * (or of the repository on a forge) can follow every link, and nothing points outside it. And the
 * benchmarks page stays a page: the standing results first, the dated history in its own file.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../..');
const PAGES = [
  'README.md',
  ...readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];

/** Relative targets of Markdown links `[text](target)`, and `../…` file names written as code. */
function targets(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
    const target = m[1]!;
    if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('#')) continue;
    out.push(target.split('#')[0]!);
  }
  // A file named in code (`../x/y.md`); not every `../` in code is one (a path-traversal example).
  for (const m of text.matchAll(/`(\.\.\/[^`\s]+\.[a-z]+)`/g)) out.push(m[1]!);
  return out;
}

describe('links in the README and docs/', () => {
  it.each(PAGES)('%s links only to files inside the repository that exist', (page) => {
    const problems: string[] = [];
    for (const target of targets(readFileSync(join(ROOT, page), 'utf8'))) {
      const path = resolve(dirname(join(ROOT, page)), target);
      if (relative(ROOT, path).startsWith('..')) problems.push(`${target}: outside the repository`);
      else if (!existsSync(path)) problems.push(`${target}: no such file`);
    }
    expect(problems).toEqual([]);
  });
});

describe('docs/benchmarks.md', () => {
  const text = readFileSync(join(ROOT, 'docs/benchmarks.md'), 'utf8');

  it('opens with the standing results: each goal with its ratio, run and commit, and how to reproduce', () => {
    const sections = [...text.matchAll(/^## (.+)$/gm)].map((m) => m[1]);
    expect(sections[0]).toBe('Standing results');
    const standing = text.slice(text.indexOf('## Standing results'), text.indexOf(`## ${sections[1]}`));
    for (const goal of [
      'passthrough / bare-undici',
      'observed / bare-undici',
      'passthrough / express-hpm',
      'max RSS',
    ]) {
      const row = standing.split('\n').find((l) => l.startsWith(`| ${goal}`));
      expect(row, goal).toBeDefined();
      expect(row, goal).toMatch(/\d\.\d/);
      expect(row, goal).toMatch(/\d\d:\d\d/);
      expect(row, goal).toMatch(/`[0-9a-f]{7}`/);
    }
    expect(standing).toContain('npm run bench');
  });

  it('is one short page; dated runs live in benchmarks-log.md', () => {
    expect(text.split('\n').length).toBeLessThan(300);
    expect(text).not.toMatch(/^## Results, \d{4}-/m);
    expect(readFileSync(join(ROOT, 'docs/benchmarks-log.md'), 'utf8')).toMatch(/^## Results, \d{4}-/m);
  });
});
