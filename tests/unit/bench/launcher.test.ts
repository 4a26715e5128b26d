import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { launcherEnv, launcherFlags, peregrineArgv, peregrineEnv } from '../../../bench/lib/launcher.ts';

const ROOT = join(import.meta.dirname, '../../..');

describe('bin/peregrine.js launcher', () => {
  it('carries its Node flags and environment on the #! line, which the bench reads back', () => {
    const argv = peregrineArgv(ROOT);
    expect(argv).toEqual(['--max-semi-space-size=8', join(ROOT, 'bin/peregrine.js')]);
    expect(peregrineEnv(ROOT, { PATH: '/bin', MALLOC_ARENA_MAX: '8' })).toEqual({
      PATH: '/bin',
      MALLOC_ARENA_MAX: '2',
    });
    expect(launcherFlags('#!/usr/bin/env -S node --a=1 --b')).toEqual(['--a=1', '--b']);
    expect(launcherFlags('#!/usr/bin/env -S node')).toEqual([]);
    expect(launcherEnv('#!/usr/bin/env -S node --a=1')).toEqual({});
    expect(launcherEnv('#!/usr/bin/env -S A_B=1 C=x=y node --a=1')).toEqual({ A_B: '1', C: 'x=y' });
    expect(launcherFlags('#!/usr/bin/env -S A_B=1 node --a=1')).toEqual(['--a=1']);
    expect(() => launcherFlags('#!/usr/bin/env node; rm -rf /')).toThrow(/unexpected #! line/);
    expect(() => launcherEnv('#!/usr/bin/env -S lower=1 node')).toThrow(/unexpected #! line/);
  });

  it('runs through its #! line and fills the compile cache with every module it imports', () => {
    const cache = mkdtempSync(join(tmpdir(), 'peregrine-compile-cache-'));
    const res = spawnSync(join(ROOT, 'bin/peregrine.js'), ['--version'], {
      cwd: ROOT,
      encoding: 'utf8',
      env: {
        ...process.env,
        PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`,
        NODE_COMPILE_CACHE: cache,
      },
    });
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string;
    expect(res.stdout.trim()).toContain(version);
    // One cache directory per Node version, holding an entry per compiled module (hundreds: the
    // project's sources and its dependencies).
    const [dir] = readdirSync(cache);
    expect(dir).toMatch(/^v24\./);
    expect(readdirSync(join(cache, dir!)).length).toBeGreaterThan(100);
  });
});
