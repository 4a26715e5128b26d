/**
 * The store's reload path at the level of its parts: the file is loaded in a child process (the
 * loader is never called in this one), the route table is built once per start and once per
 * reload (validation builds none), a reload compiles only the routes and upstreams whose config
 * changed, and concurrent reloads each resolve with a run that read the
 * file after them.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import * as loader from '../../../src/config/loader.ts';
import { ConfigStore } from '../../../src/control/config-store.ts';
import * as routePath from '../../../src/dataplane/routing/route-path.ts';
import * as routeTable from '../../../src/dataplane/routing/route-table.ts';
import { createMetrics } from '../../../src/telemetry/metrics.ts';

vi.mock(import('../../../src/dataplane/routing/route-table.ts'), async (importOriginal) => {
  const original = await importOriginal();
  return {
    ...original,
    createRouteTable: vi.fn(original.createRouteTable),
    routeTableSteps: vi.fn(original.routeTableSteps),
  };
});
vi.mock(import('../../../src/dataplane/routing/route-path.ts'), async (importOriginal) => {
  const original = await importOriginal();
  return { ...original, compileRoutePath: vi.fn(original.compileRoutePath) };
});
vi.mock(import('../../../src/config/loader.ts'), async (importOriginal) => {
  const original = await importOriginal();
  return {
    ...original,
    loadConfigFile: vi.fn(original.loadConfigFile),
    loadConfigSource: vi.fn(original.loadConfigSource),
  };
});

const dir = mkdtempSync(join(tmpdir(), 'peregrine-store-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function writeRoutes(file: string, routes: number, tag: string): void {
  writeFileSync(
    file,
    stringify({
      listeners: [{ name: 'edge', address: '127.0.0.1:0' }],
      upstreams: { u: { endpoints: ['http://127.0.0.1:9'] } },
      routes: Array.from({ length: routes }, (_, i) => ({
        name: `${tag}-${i}`,
        upstream: 'u',
        match: i % 2 === 0 ? { host: `h${i}.example.com` } : { path: `/p${i}` },
      })),
    }),
  );
}

/** Route tables built in this process since the last reset. */
function tablesBuilt(): number {
  return (
    vi.mocked(routeTable.createRouteTable).mock.calls.length +
    vi.mocked(routeTable.routeTableSteps).mock.calls.length
  );
}

let store: ConfigStore | undefined;
beforeEach(() => vi.clearAllMocks());
afterEach(async () => {
  await store?.close();
  store = undefined;
});

async function startStore(file: string): Promise<ConfigStore> {
  const config = await loader.loadConfigFile(file, {});
  store = new ConfigStore(config, {
    file,
    logger: pino({ enabled: false }),
    metrics: createMetrics({ exemplars: false, version: 't' }),
    env: {},
  });
  return store;
}

describe('ConfigStore', () => {
  it('validation builds no route table; start builds one, a reload one more, loaded in a child process', async () => {
    const file = join(dir, 'tables.yaml');
    writeRoutes(file, 200, 'a');
    await loader.loadConfigFile(file, {});
    expect(tablesBuilt()).toBe(0);

    const s = await startStore(file);
    expect(tablesBuilt()).toBe(1);
    expect(s.current.routes.routes).toHaveLength(200);

    vi.clearAllMocks();
    writeRoutes(file, 201, 'b');
    const result = await s.reload('test');
    expect(result).toMatchObject({ ok: true, changed: true, version: 2 });
    expect(s.current.routes.routes.map((r) => r.name)).toContain('b-200');
    expect(tablesBuilt()).toBe(1);
    // Parsed and validated in the child process, not here.
    expect(loader.loadConfigFile).not.toHaveBeenCalled();
    expect(loader.loadConfigSource).not.toHaveBeenCalled();
  });

  it('a reload that adds a route compiles that route alone and keeps every upstream', async () => {
    const file = join(dir, 'adds.yaml');
    const upstreams = Object.fromEntries(
      Array.from({ length: 5 }, (_, k) => [`u${k}`, { endpoints: [`http://127.0.0.1:${9000 + k}`] }]),
    );
    const route = (i: number) => ({
      name: `r${i}`,
      upstream: `u${i % 5}`,
      match:
        i % 3 === 0
          ? { host: `h${i}.example.com` }
          : i % 3 === 1
            ? { path: `/p${i}/:id`, pathType: 'template' }
            : { path: `/e${i}`, pathType: 'exact', methods: ['GET'] },
    });
    const write = (routes: number, changed?: number) =>
      writeFileSync(
        file,
        stringify({
          listeners: [{ name: 'edge', address: '127.0.0.1:0' }],
          upstreams,
          routes: Array.from({ length: routes }, (_, i) =>
            i === changed ? { ...route(i), priority: 5 } : route(i),
          ),
        }),
      );
    write(60);
    const s = await startStore(file);
    const before = s.current;
    vi.clearAllMocks();

    write(61);
    expect(await s.reload('test')).toMatchObject({ ok: true, changed: true });
    expect(s.current.routes.routes).toHaveLength(61);
    // One path compiled in this process: the new route's.
    // Route 60 has a host and the default path.
    expect(vi.mocked(routePath.compileRoutePath).mock.calls).toEqual([['/', 'prefix']]);
    const rebuilt = [...s.current.clusters].filter(([name, c]) => before.clusters.get(name) !== c);
    expect(rebuilt).toHaveLength(0);
    expect(s.current.clusters.size).toBe(5);

    // A changed route is compiled again, and only it.
    vi.clearAllMocks();
    write(61, 7);
    expect(await s.reload('test')).toMatchObject({ ok: true, changed: true });
    expect(vi.mocked(routePath.compileRoutePath)).toHaveBeenCalledTimes(1);
    expect(vi.mocked(routePath.compileRoutePath)).toHaveBeenCalledWith('/p7/:id', 'template');
    expect(s.current.routes.routes.find((r) => r.name === 'r7')!.priority).toBe(5);
  });

  it('an unchanged file compiles nothing and keeps the version', async () => {
    const file = join(dir, 'same.yaml');
    writeRoutes(file, 10, 'a');
    const s = await startStore(file);
    vi.clearAllMocks();
    writeRoutes(file, 10, 'a');
    expect(await s.reload('test')).toMatchObject({ ok: true, changed: false, version: 1 });
    expect(tablesBuilt()).toBe(0);
  });

  it('reports an invalid file with its lines, from the child process', async () => {
    const file = join(dir, 'bad.yaml');
    writeRoutes(file, 4, 'a');
    const s = await startStore(file);
    writeFileSync(
      file,
      'listeners:\n  - name: edge\n    address: 127.0.0.1:0\nroutes:\n  - name: x\n    upstream: nope\n',
    );
    const result = await s.reload('test');
    expect(result.ok).toBe(false);
    expect(!result.ok && result.failure.issues).toEqual([
      expect.objectContaining({
        file,
        line: 6,
        path: 'routes.0.upstream',
        message: 'unknown upstream "nope"',
      }),
    ]);
    expect(s.current.version).toBe(1);
  });

  it('a reload called during another resolves with a run that read the file after the call', async () => {
    const file = join(dir, 'coalesce.yaml');
    writeRoutes(file, 4, 'gen0');
    const s = await startStore(file);
    writeRoutes(file, 4, 'gen1');
    const first = s.reload('a');
    writeRoutes(file, 4, 'gen2');
    const second = s.reload('b');
    const third = s.reload('c');
    // The calls made during the first run share the next one, which starts after the first ends.
    expect(second).not.toBe(first);
    expect(third).toBe(second);
    expect(await second).toMatchObject({ ok: true });
    expect(await first).toMatchObject({ ok: true });
    expect(s.current.routes.routes[0]!.name).toMatch(/^gen2-/);
  });

  it('close stops a reload that is still loading; none starts afterwards', async () => {
    const file = join(dir, 'close.yaml');
    writeRoutes(file, 4, 'a');
    const s = await startStore(file);
    writeRoutes(file, 4, 'b');
    const pending = s.reload('test');
    await s.close();
    store = undefined;
    // close() stopped the child before it could answer.
    const result = await pending;
    expect(result.ok).toBe(false);
    expect(!result.ok && result.failure.issues[0]!.message).toMatch(/shutting down/);
    expect(s.current.version).toBe(1);
    expect(await s.reload('again')).toMatchObject({ ok: false });
  });
});
