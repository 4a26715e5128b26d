/**
 * The status page stays small and stays what the Content-Security-Policy allows: no inline code,
 * nothing from another origin, and data written as text only.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { UI_CSP, UI_FILES, uiWeight } from '../../../src/admin/ui.ts';

/** The page's budget in bytes, uncompressed (docs/admin.md states the weight). */
const BUDGET = 32 * 1024;
const dir = join(import.meta.dirname, '../../../src/admin/ui');
const read = (name: string) => readFileSync(join(dir, name), 'utf8');

describe('the status page files', () => {
  it(`weigh less than ${BUDGET} bytes together`, () => {
    const weight = uiWeight();
    expect(weight).toBeGreaterThan(10_000);
    expect(weight).toBeLessThan(BUDGET);
  });

  it('load nothing from another origin and run no inline code', () => {
    const html = read('index.html');
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.toMatch(/\son[a-z]+=/i);
    expect(html).not.toMatch(/<style/);
    expect(html).not.toMatch(/\sstyle=/);
    for (const name of Object.keys(UI_FILES))
      expect(read(name), name).not.toMatch(/(src|href)="(https?:)?\/\//);
    expect(UI_CSP).not.toMatch(/unsafe|\*/);
  });

  it('write data as text: no innerHTML, outerHTML, insertAdjacentHTML, document.write or eval', () => {
    const js = read('app.js');
    expect(js).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function/);
  });
});
