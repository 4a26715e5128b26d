/**
 * How the tests find the programs they run (tests/helpers/tools.ts): the *_BIN variable, then
 * PATH, then .tools/ from scripts/get-tools.sh; and when nothing runs, a message that says what
 * to do. Stand-in binaries are shell scripts; the lookup order is what is tested.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { findTool, PROMETHEUS, REDIS_SERVER } from '../helpers/tools.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'peregrine-tools-'));
  dirs.push(d);
  return d;
}

/** An executable at `dir/name` that prints `says` for --version. */
function fakeBinary(dir: string, name: string, says: string): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\necho '${says}'\n`);
  chmodSync(path, 0o755);
  return path;
}

/** A PATH on which nothing is found. */
const BARE_PATH = '/nonexistent-peregrine-path';

describe('findTool', () => {
  it('fails with the three ways to provide the tool when none runs', () => {
    const toolsRoot = tempDir();
    const find = () => findTool(PROMETHEUS, 'the dashboard test', { env: { PATH: BARE_PATH }, toolsRoot });
    expect(find).toThrow(/^the dashboard test needs prometheus and found none:/);
    const message = (() => {
      try {
        find();
      } catch (err) {
        return (err as Error).message;
      }
      return '';
    })();
    expect(message).toContain('PROMETHEUS_BIN is not set');
    expect(message).toContain('scripts/get-tools.sh prometheus');
    expect(message).toContain('sudo apt-get install prometheus');
    expect(message).toContain('PROMETHEUS_BIN=/path/to/prometheus npm test');
  });

  it('takes the *_BIN variable first, and refuses one that does not run', () => {
    const toolsRoot = tempDir();
    fakeBinary(join(toolsRoot, 'usr/bin'), 'redis-server', 'from .tools');
    const mine = fakeBinary(tempDir(), 'my-redis', 'Redis server v=7');
    const found = findTool(REDIS_SERVER, 'the registry test', {
      env: { PATH: BARE_PATH, REDIS_SERVER_BIN: mine },
      toolsRoot,
    });
    expect(found).toMatchObject({ path: mine, source: 'env' });
    expect(() =>
      findTool(REDIS_SERVER, 'the registry test', {
        env: { PATH: BARE_PATH, REDIS_SERVER_BIN: '/nonexistent/redis-server' },
        toolsRoot,
      }),
    ).toThrow(/REDIS_SERVER_BIN=\/nonexistent\/redis-server does not run/);
  });

  it('then PATH, then .tools/, which runs with its extracted libraries on LD_LIBRARY_PATH', () => {
    const toolsRoot = tempDir();
    const local = fakeBinary(join(toolsRoot, 'usr/bin'), 'prometheus', 'prometheus, version 2 (.tools)');
    mkdirSync(join(toolsRoot, 'usr/lib/x86_64-linux-gnu'), { recursive: true });
    const onPath = tempDir();
    fakeBinary(onPath, 'prometheus', 'prometheus, version 2 (PATH)');

    const fromPath = findTool(PROMETHEUS, 't', { env: { PATH: `${onPath}:${BARE_PATH}` }, toolsRoot });
    expect(fromPath).toMatchObject({ path: 'prometheus', source: 'PATH' });

    const fromTools = findTool(PROMETHEUS, 't', { env: { PATH: BARE_PATH }, toolsRoot });
    expect(fromTools).toMatchObject({ path: local, source: '.tools' });
    expect(fromTools.env.LD_LIBRARY_PATH).toBe(
      [join(toolsRoot, 'usr/lib'), join(toolsRoot, 'usr/lib/x86_64-linux-gnu')].join(':'),
    );
  });
});
