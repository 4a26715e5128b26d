import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { ConfigLoader, fingerprintOf, loadConfigApart } from '../../../src/config/load-apart.ts';
import { ConfigError, loadConfigFile } from '../../../src/config/loader.ts';
import { dynamicPart } from '../../../src/config/schema.ts';

const dir = mkdtempSync(join(tmpdir(), 'peregrine-load-apart-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('loadConfigApart', () => {
  it('gives what loadConfigFile gives, whole (the shipped examples), with the same fingerprint', async () => {
    for (const file of ['config/gateway.yaml', 'config/examples/full.yaml']) {
      const env = { TRACE_SAMPLE_RATIO: '0.25' };
      const here = await loadConfigFile(file, env);
      const there = await loadConfigApart(file, env);
      expect(there.config).toStrictEqual(here);
      expect(there.fingerprint).toBe(fingerprintOf(here));
    }
  });

  it('uses the environment it is given, not the process one', async () => {
    const file = join(dir, 'env.yaml');
    writeFileSync(file, `listeners:\n  - name: edge\n    address: \${ADDR}\n`);
    const loaded = await loadConfigApart(file, { ADDR: '127.0.0.1:1234' });
    expect(loaded.config.listeners[0]!.address).toBe('127.0.0.1:1234');
  });

  it('rejects with the issues, lines included, of an invalid or unreadable file', async () => {
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'listeners:\n  - name: edge\n    address: nowhere\n');
    const err = await loadConfigApart(file, {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).issues).toEqual([
      expect.objectContaining({ file, line: 3, path: 'listeners.0.address' }),
    ]);
    const missing = join(dir, 'missing.yaml');
    const gone = await loadConfigApart(missing, {}).catch((e: unknown) => e);
    expect((gone as ConfigError).issues).toEqual([
      { file: missing, path: '', message: 'cannot read config file (ENOENT)' },
    ]);
  });

  it('stops when aborted', async () => {
    const controller = new AbortController();
    const pending = loadConfigApart('config/gateway.yaml', {}, controller.signal);
    controller.abort();
    const err = await pending.catch((e: unknown) => e);
    expect((err as ConfigError).issues[0]!.message).toMatch(/shutting down/);
  });

  it('fingerprints differ when a dynamic part differs, not when only a static one does', async () => {
    const base = await loadConfigFile('config/examples/full.yaml', {});
    const moved = { ...base, admin: { ...base.admin, address: '127.0.0.1:1' } };
    expect(fingerprintOf(moved)).toBe(fingerprintOf(base));
    const routes = dynamicPart(base).routes.map((r, i) => (i === 0 ? { ...r, priority: r.priority + 1 } : r));
    expect(fingerprintOf({ ...base, routes })).not.toBe(fingerprintOf(base));
  });
});

describe('ConfigLoader', () => {
  const file = join(dir, 'warm.yaml');
  const write = (paths: string[]) =>
    writeFileSync(
      file,
      stringify({
        listeners: [{ name: 'edge', address: '127.0.0.1:0' }],
        upstreams: { u: { endpoints: ['http://127.0.0.1:9'] } },
        routes: paths.map((path, i) => ({ name: `r${i}`, upstream: 'u', match: { path } })),
      }),
    );

  it('keeps its child between loads, and stops it once idle for keepMs', async () => {
    const loader = new ConfigLoader({ keepMs: 300 });
    try {
      write(['/a']);
      await loader.load(file, {});
      const pid = loader.pid;
      expect(pid).toBeTypeOf('number');
      write(['/b']);
      expect((await loader.load(file, {})).config.routes[0]!.match.path).toBe('/b');
      expect(loader.pid).toBe(pid);
      await expect.poll(() => loader.pid, { timeout: 10_000, interval: 50 }).toBeUndefined();
      // The next load starts another.
      expect((await loader.load(file, {})).config.routes[0]!.match.path).toBe('/b');
      expect(loader.pid).not.toBe(pid);
    } finally {
      loader.close();
    }
  });

  it('gives back the object of an unchanged route, a new one for a changed route', async () => {
    const loader = new ConfigLoader();
    try {
      write(['/a', '/b']);
      const initial = await loadConfigFile(file, {});
      loader.remember(initial);
      write(['/a', '/c', '/d']);
      const { config } = await loader.load(file, {});
      expect(config.routes[0]).toBe(initial.routes[0]);
      expect(config.routes[1]).not.toBe(initial.routes[1]);
      expect(config.routes.map((r) => r.match.path)).toEqual(['/a', '/c', '/d']);
      // Remembered from the last load.
      const again = await loader.load(file, {});
      expect(again.config.routes[2]).toBe(config.routes[2]);
    } finally {
      loader.close();
    }
  });

  it('replaces a child that died between loads', async () => {
    const loader = new ConfigLoader();
    try {
      write(['/a']);
      await loader.load(file, {});
      process.kill(loader.pid!, 'SIGKILL');
      await expect.poll(() => loader.pid, { timeout: 10_000, interval: 50 }).toBeUndefined();
      expect((await loader.load(file, {})).config.routes).toHaveLength(1);
    } finally {
      loader.close();
    }
  });
});
