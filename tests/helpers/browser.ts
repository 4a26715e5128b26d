/**
 * A real browser for tests of the status page: Debian's Chromium driven by playwright-core
 * (Playwright's own browser download cannot run here), headless, with a fresh profile that is
 * removed on close. Without a Chromium the test fails with a message saying how to get one.
 */
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { type BrowserContext, chromium } from 'playwright-core';
import { CHROMIUM, findTool } from './tools.ts';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** An absolute path for `command` (Playwright wants one): as given, or found on PATH. */
function onPath(command: string, env: NodeJS.ProcessEnv): string {
  if (command.includes('/')) return command;
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    try {
      accessSync(join(dir, command), constants.X_OK);
      return join(dir, command);
    } catch {}
  }
  return command;
}

export interface TestBrowser {
  readonly context: BrowserContext;
  close(): Promise<void>;
}

/** `viewport`: the window size (screenshots). */
export async function launchBrowser(
  neededBy: string,
  viewport = { width: 1400, height: 900 },
): Promise<TestBrowser> {
  const tool = findTool(CHROMIUM, neededBy);
  const profile = mkdtempSync(join(tmpdir(), 'peregrine-chromium-'));
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: onPath(tool.path, tool.env),
      env: tool.env as Record<string, string>,
      args: CHROMIUM_ARGS,
      viewport,
      timeout: 60_000,
    });
  } catch (err) {
    rmSync(profile, { recursive: true, force: true });
    throw err;
  }
  let closing: Promise<void> | undefined;
  return {
    context,
    close() {
      closing ??= context.close().finally(() => rmSync(profile, { recursive: true, force: true }));
      return closing;
    },
  };
}
