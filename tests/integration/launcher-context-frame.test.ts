/**
 * Node 24 decides whether AsyncLocalStorage runs on async context frames the first time something
 * asks, and then swaps the prototype of its internal AsyncContextFrame class. The tick queue's
 * code that has met the class before the swap keeps generic property loads for the process's
 * life (docs/decisions.md, "The mesh hop's CPU"), so the launcher settles it before the gateway's
 * first module is loaded. Seen from inside a real launcher process: a preload notes the class's
 * prototype when the process starts and when `src/main.ts` is about to load.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const LAUNCHER = join(import.meta.dirname, '../../bin/peregrine.js');

const PRELOAD = `import { createRequire, registerHooks } from 'node:module';
const frame = createRequire(${JSON.stringify(LAUNCHER)})('internal/async_context_frame');
const state = () => Object.getPrototypeOf(frame).name;
const seen = { atStart: state() };
registerHooks({
  load(url, context, next) {
    if (url.endsWith('/src/main.ts')) seen.atMain = state();
    return next(url, context);
  },
});
process.on('exit', () => process.stderr.write('frames:' + JSON.stringify(seen)));`;

describe('the launcher and async context frames', () => {
  it("settles Node's AsyncContextFrame before the gateway's code loads", async () => {
    const { stdout, stderr } = await run(
      process.execPath,
      [
        '--expose-internals',
        '--no-warnings',
        '--import',
        `data:text/javascript,${encodeURIComponent(PRELOAD)}`,
        LAUNCHER,
        '--version',
      ],
      { timeout: 30_000 },
    );
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    const seen = JSON.parse(stderr.slice(stderr.indexOf('frames:') + 'frames:'.length)) as Record<
      string,
      string
    >;
    // Unsettled when the process starts: the check below would notice the launcher doing nothing.
    expect(seen.atStart).toBe('InactiveAsyncContextFrame');
    expect(seen.atMain).toBe('ActiveAsyncContextFrame');
  }, 40_000);
});
