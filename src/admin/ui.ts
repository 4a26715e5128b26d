/**
 * The status page's files (src/admin/ui/): one HTML page, one script module, one style sheet and
 * an icon, read once when the admin app is built and served from memory under `/ui`. No build
 * step and nothing from elsewhere: the page renders the admin API's JSON with `textContent` only,
 * and a strict Content-Security-Policy (scripts and styles from this origin, no inline code)
 * keeps anything else from running.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Express, Request, Response } from 'express';

const UI_DIR = join(import.meta.dirname, 'ui');

/** File name → content type. Every file of the page; nothing else under /ui is served. */
export const UI_FILES: Readonly<Record<string, string>> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
  'icon.svg': 'image/svg+xml',
};

export const UI_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const UI_HEADERS = {
  'content-security-policy': UI_CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  // Small, and replaced by every upgrade: always revalidated.
  'cache-control': 'no-cache',
};

/** The page's total weight in bytes (what a browser downloads on first load, uncompressed). */
export function uiWeight(): number {
  let bytes = 0;
  for (const name of Object.keys(UI_FILES)) bytes += readFileSync(join(UI_DIR, name)).length;
  return bytes;
}

/** Serve the page: `/` redirects to `/ui`, which is the HTML; its files are under `/ui/`. */
export function mountUi(app: Express): void {
  const files = new Map<string, { body: Buffer; type: string }>();
  for (const [name, type] of Object.entries(UI_FILES))
    files.set(name, { body: readFileSync(join(UI_DIR, name)), type });
  const send = (res: Response, name: string): void => {
    const file = files.get(name)!;
    res.status(200).set(UI_HEADERS).type(file.type).send(file.body);
  };
  app.get('/', function toUi(_req: Request, res: Response) {
    res.redirect(302, '/ui');
  });
  app.get(['/ui', '/ui/'], function uiPage(_req: Request, res: Response) {
    send(res, 'index.html');
  });
  app.get('/ui/:file', function uiFile(req: Request, res: Response, next) {
    const name = req.params.file as string;
    if (name === 'index.html' || !files.has(name)) return next();
    send(res, name);
  });
}
