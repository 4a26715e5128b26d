import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fingerprintOf, loadConfigApart } from '../../../src/config/load-apart.ts';
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
