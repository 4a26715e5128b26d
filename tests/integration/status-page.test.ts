/**
 * The status page in a real browser (Debian's Chromium through playwright-core) against a real
 * gateway with real upstreams: it loads with no console error and no CSP violation, shows the
 * routes and endpoints, follows an endpoint that fails its health checks and a breaker that
 * opens, shows a refused request's code and trace id (linked to the trace backend), and renders
 * a hostile reload error as text.
 *
 * STATUS_PAGE_SCREENSHOT=docs/images/status-page.png takes the README's screenshot at the end.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { ConfigInput } from '../../src/config/schema.ts';
import { launchBrowser, type TestBrowser } from '../helpers/browser.ts';
import { startGateway, type TestGateway, testConfig } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const TRACE_UI = 'http://traces.example/trace/{traceId}';
/** Within this long of a change, the page must show it (health checks and breaker included). */
const SHOWS_WITHIN_MS = 5000;

let usersA: TestUpstream;
let usersB: TestUpstream;
let payments: TestUpstream;
let gw: TestGateway;
let browser: TestBrowser;
let page: Page;
let launchError: unknown;
const consoleErrors: string[] = [];

function config(): Partial<ConfigInput> {
  return {
    telemetry: { tracing: { sampleRatio: 1, uiUrl: TRACE_UI } },
    upstreams: {
      users: {
        endpoints: [usersA.url, usersB.url],
        healthCheck: { path: '/healthz', interval: '200ms', timeout: '200ms', unhealthyThreshold: 2 },
      },
      payments: {
        endpoints: [payments.url],
        retries: { maxAttempts: 1 },
        circuitBreaker: { consecutiveFailures: 3, openDuration: '60s' },
        outlierDetection: { enabled: false },
      },
    },
    routes: [
      { name: 'users', match: { path: '/users', methods: ['GET'] }, upstream: 'users' },
      {
        name: 'payments',
        match: { path: '/payments' },
        upstream: 'payments',
        rewrite: { stripPrefix: '/payments' },
      },
    ],
  };
}

beforeAll(async () => {
  usersA = await startUpstream();
  usersB = await startUpstream();
  payments = await startUpstream();
  gw = await startGateway(config(), { asFile: true });
  try {
    browser = await launchBrowser('the status page test');
  } catch (err) {
    // Every test fails with this (a failed beforeAll would report them skipped).
    launchError = err;
    return;
  }
  page = await browser.context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') consoleErrors.push(`${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (err) => consoleErrors.push(`pageerror: ${err.message}`));
}, 90_000);

beforeEach(() => {
  if (launchError !== undefined) throw launchError;
});

afterAll(async () => {
  await browser?.close();
  await gw?.close();
  await Promise.all([usersA?.close(), usersB?.close(), payments?.close()]);
});

async function ticks(): Promise<number> {
  return Number((await page.locator('body').getAttribute('data-ticks')) ?? 0);
}

/** Wait until the page has read the API at least once more after now. */
async function nextReading(): Promise<void> {
  const before = await ticks();
  await expect.poll(ticks, { timeout: SHOWS_WITHIN_MS }).toBeGreaterThan(before);
}

describe('the status page', () => {
  it('is served from / and /ui with a strict Content-Security-Policy and no inline script', async () => {
    const root = await fetch(`${gw.adminUrl}/`, { redirect: 'manual' });
    expect(root.status).toBe(302);
    expect(root.headers.get('location')).toBe('/ui');
    const ui = await fetch(`${gw.adminUrl}/ui`);
    expect(ui.status).toBe(200);
    expect(ui.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = ui.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    const html = await ui.text();
    // Every script has a src: nothing inline for the policy to allow.
    expect(html.match(/<script\b[^>]*>/g)).toEqual(['<script type="module" src="/ui/app.js">']);
    expect((await fetch(`${gw.adminUrl}/ui/nope.js`)).status).toBe(404);
  });

  it('loads with no console error and shows the routes and the endpoints', async () => {
    for (let i = 0; i < 5; i++) expect((await fetch(`${gw.url}/users/${i}`)).status).toBe(200);
    await page.goto(`${gw.adminUrl}/ui?refresh=0.5`);
    await expect.poll(ticks, { timeout: 10_000 }).toBeGreaterThan(0);
    const users = page.locator('tr[data-route="users"]');
    await expect.poll(() => users.textContent()).toContain('/users');
    expect(await users.textContent()).toContain('GET');
    expect(await page.locator('tr[data-route="payments"]').count()).toBe(1);
    for (const up of [usersA, usersB]) {
      const row = page.locator(`tr[data-endpoint="${up.url}"]`);
      await expect.poll(() => row.getAttribute('data-state')).toBe('healthy');
    }
    expect(await page.locator('#version').textContent()).toBe(`v${gw.gateway.version}`);
    expect(await page.locator('#ready').textContent()).toBe('ready');
    expect(await page.locator('#login').isVisible()).toBe(false);
    expect(await page.locator('#facts').textContent()).toContain('no credential (loopback address)');
    expect(await page.locator('tr[data-listener="edge"]').textContent()).toContain(`127.0.0.1:${gw.port}`);
    // A second reading gives a rate for the route.
    await nextReading();
    await expect.poll(() => users.locator('td.num').first().textContent()).toMatch(/^\d+\.\d\d$/);
    expect(consoleErrors).toEqual([]);
  });

  it('shows an endpoint going unhealthy within seconds when its upstream stops', async () => {
    await usersB.close();
    const stoppedAt = Date.now();
    const row = page.locator(`tr[data-endpoint="${usersB.url}"]`);
    await expect.poll(() => row.getAttribute('data-state'), { timeout: SHOWS_WITHIN_MS }).toBe('unhealthy');
    expect(Date.now() - stoppedAt).toBeLessThan(SHOWS_WITHIN_MS);
    expect(await row.textContent()).toMatch(/not eligible/);
    expect(await page.locator(`tr[data-endpoint="${usersA.url}"]`).getAttribute('data-state')).toBe(
      'healthy',
    );
  });

  it('shows a breaker opening, with the reason of its transition', async () => {
    for (let i = 0; i < 3; i++) expect((await fetch(`${gw.url}/payments/status/503`)).status).toBe(503);
    const openedAt = Date.now();
    const breaker = page.locator('[data-breaker="payments"]');
    await expect.poll(() => breaker.textContent(), { timeout: SHOWS_WITHIN_MS }).toContain('open');
    expect(Date.now() - openedAt).toBeLessThan(SHOWS_WITHIN_MS);
    const heading = await page.locator('[data-upstream="payments"] h3').textContent();
    expect(heading).toMatch(/closed → open .*ago: .*3 consecutive failures/);
  });

  it("shows refused requests' codes and trace ids, linked to the trace backend", async () => {
    const circuit = await fetch(`${gw.url}/payments/anything`);
    expect(circuit.status).toBe(503);
    const circuitBody = (await circuit.json()) as { code: string; traceId: string };
    expect(circuitBody.code).toBe('CIRCUIT_OPEN');
    const missing = await fetch(`${gw.url}/nowhere`);
    expect(missing.status).toBe(404);
    const missingBody = (await missing.json()) as { code: string; traceId: string };
    expect(missingBody.code).toBe('ROUTE_NOT_FOUND');

    for (const body of [circuitBody, missingBody]) {
      const row = page.locator(`tr[data-trace-id="${body.traceId}"]`);
      await expect.poll(() => row.count(), { timeout: SHOWS_WITHIN_MS }).toBe(1);
      expect(await row.getAttribute('data-code')).toBe(body.code);
      expect(await row.textContent()).toContain(body.code);
      const link = row.locator('a');
      expect(await link.textContent()).toBe(body.traceId);
      expect(await link.getAttribute('href')).toBe(TRACE_UI.replace('{traceId}', body.traceId));
    }
    const circuitRow = await page.locator(`tr[data-trace-id="${circuitBody.traceId}"]`).textContent();
    expect(circuitRow).toContain('payments');
    expect(circuitRow).toContain('503');
    // Newest first.
    expect(await page.locator('#decision-rows tr').first().getAttribute('data-trace-id')).toBe(
      missingBody.traceId,
    );
    if (process.env.STATUS_PAGE_SCREENSHOT) {
      for (let i = 0; i < 20; i++) await fetch(`${gw.url}/users/${i}`);
      await nextReading();
      await nextReading();
      await page.screenshot({ path: process.env.STATUS_PAGE_SCREENSHOT, fullPage: true });
    }
  });

  it('shows a rejected reload with its errors as text, never as markup', async () => {
    const hostile = '<img src=x onerror=alert(1)>';
    const bad = testConfig(config());
    (bad.routes![0] as Record<string, unknown>)[hostile] = 1;
    writeFileSync(gw.configFile!, stringify(bad));
    expect((await fetch(`${gw.adminUrl}/v1/config/reload`, { method: 'POST' })).status).toBe(422);
    const issues = page.locator('#reload-issues li');
    await expect.poll(() => issues.first().textContent(), { timeout: SHOWS_WITHIN_MS }).toContain(hostile);
    expect(await issues.first().textContent()).toMatch(/gateway\.yaml:\d+ routes\.0/);
    expect(await page.locator('#facts').textContent()).toContain('the last good config serves');
    expect(await page.locator('main img').count()).toBe(0);
  });

  it('logged no console error, CSP violation or page error through all of it', () => {
    expect(consoleErrors).toEqual([]);
  });
});

describe('the status page behind an admin token', () => {
  it('asks for the token, then shows the gateway; a wrong token is refused', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'peregrine-ui-token-'));
    const token = 'st4tus-page-t0ken-abcdef012345';
    writeFileSync(join(dir, 'token'), token);
    const guarded = await startGateway({
      ...config(),
      admin: { auth: { token: { file: join(dir, 'token') } } },
    });
    const p = await browser.context.newPage();
    try {
      await p.goto(`${guarded.adminUrl}/ui?refresh=0.5`);
      const login = p.locator('#login');
      await expect.poll(() => login.isVisible()).toBe(true);
      expect(await p.locator('tr[data-route]').count()).toBe(0);
      await p.fill('#token', 'not-the-token-at-all');
      await p.click('#login button');
      await expect.poll(() => p.locator('#login-error').textContent()).toContain('not the admin token');
      await p.fill('#token', token);
      await p.click('#login button');
      await expect.poll(() => p.locator('tr[data-route="users"]').count()).toBe(1);
      expect(await login.isVisible()).toBe(false);
      expect(await p.locator('#facts').textContent()).toContain('bearer token; probes open');
      // The token stays in this tab's session, never in the page.
      expect(await p.content()).not.toContain(token);
    } finally {
      await p.close();
      await guarded.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
