import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { healthzUrl, runHealthcheck } from '../../../src/cli/healthcheck.ts';
import { configJsonSchema, runSchema } from '../../../src/cli/schema.ts';
import { runValidate } from '../../../src/cli/validate.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

function capture(): {
  out: { stdout: (s: string) => void; stderr: (s: string) => void };
  stdout: string[];
  stderr: string[];
} {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { out: { stdout: (s) => stdout.push(s), stderr: (s) => stderr.push(s) }, stdout, stderr };
}

describe('runValidate', () => {
  for (const shipped of ['config/gateway.yaml', 'config/container.yaml', 'config/examples/full.yaml']) {
    it(`accepts the shipped ${shipped}`, async () => {
      const c = capture();
      const file = join(ROOT, shipped);
      expect(await runValidate(file, c.out)).toBe(0);
      expect(c.stdout).toEqual([`ok: ${file}`]);
      expect(c.stderr).toEqual([]);
    });
  }

  it('prints every issue to stderr and exits 2 for a broken file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'peregrine-validate-'));
    try {
      const file = join(dir, 'broken.yaml');
      await writeFile(
        file,
        [
          'listeners:',
          '  - name: edge',
          '    address: 0.0.0.0:8080',
          '    bogus: true',
          'routes:',
          '  - name: r',
          '    upstream: nope',
          '',
        ].join('\n'),
      );
      const c = capture();
      expect(await runValidate(file, c.out)).toBe(2);
      expect(c.stdout).toEqual([]);
      expect(c.stderr).toEqual([
        `${file}:4 listeners.0.bogus: unknown key "bogus"`,
        `${file}:7 routes.0.upstream: unknown upstream "nope"`,
      ]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('exits 2 for a missing file', async () => {
    const c = capture();
    const file = join(tmpdir(), 'peregrine-no-such-dir', 'gateway.yaml');
    expect(await runValidate(file, c.out)).toBe(2);
    expect(c.stderr).toEqual([`${file} (root): cannot read config file (ENOENT)`]);
  });
});

describe('configJsonSchema / runSchema', () => {
  it('describes the config input with id, title, defaults and strictness', () => {
    // biome-ignore lint/suspicious/noExplicitAny: walking a JSON Schema document in assertions
    const schema = configJsonSchema() as Record<string, any>;
    expect(schema['$schema']).toBe('https://json-schema.org/draft/2020-12/schema');
    expect(schema['$id']).toMatch(/^https:\/\//);
    expect(schema['title']).toMatch(/Peregrine/);
    // A gateway needs listeners; a sidecar its sidecar section (and derives its listeners).
    expect(schema['if']).toEqual({ properties: { mode: { const: 'sidecar' } }, required: ['mode'] });
    expect(schema['then']).toEqual({ required: ['sidecar'] });
    expect(schema['else']).toEqual({ required: ['listeners'] });
    expect(schema['additionalProperties']).toBe(false);
    const upstream = schema['properties'].upstreams.additionalProperties;
    expect(upstream.oneOf).toEqual([{ required: ['endpoints'] }, { required: ['discovery'] }]);
    expect(upstream.properties.discovery.oneOf).toEqual([{ required: ['registry'] }, { required: ['dns'] }]);
    // Durations are strings or numbers on input, with their default.
    expect(upstream.properties.timeouts.properties.connect).toMatchObject({
      default: '2s',
      type: ['string', 'number'],
    });
    expect(schema['properties'].admin.properties.address.default).toBe('127.0.0.1:9901');
  });

  it('prints pretty JSON and returns 0', () => {
    const c = capture();
    expect(runSchema(c.out)).toBe(0);
    expect(c.stdout).toHaveLength(1);
    expect(JSON.parse(c.stdout[0]!)).toEqual(configJsonSchema());
    expect(c.stdout[0]).toContain('\n  "$id"');
  });
});

describe('healthcheck', () => {
  it('asks /healthz on the admin address, on loopback for a wildcard bind', () => {
    expect(healthzUrl('127.0.0.1:9901')).toBe('http://127.0.0.1:9901/healthz');
    expect(healthzUrl('0.0.0.0:9901')).toBe('http://127.0.0.1:9901/healthz');
    expect(healthzUrl('[::]:9901')).toBe('http://[::1]:9901/healthz');
    expect(healthzUrl('[::1]:9902')).toBe('http://[::1]:9902/healthz');
    expect(healthzUrl('admin.internal:9901')).toBe('http://admin.internal:9901/healthz');
  });

  it('is unhealthy, in one line, when the config does not load', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'peregrine-health-'));
    try {
      const file = join(dir, 'bad.yaml');
      await writeFile(file, 'listeners: []\n');
      const c = capture();
      expect(await runHealthcheck(file, c.out)).toBe(1);
      expect(c.stderr).toEqual([`unhealthy: ${file} does not load (peregrine validate ${file} says why)`]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
