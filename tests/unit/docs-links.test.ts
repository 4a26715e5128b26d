/**
 * The README and docs/ link only to files that exist in the repository: a reader of a checkout
 * (or of the repository on a forge) can follow every link, and nothing points outside it.
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
