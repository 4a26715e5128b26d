/**
 * `peregrine validate` as a process: the certificate files of TLS listeners and upstreams are read
 * and checked as the gateway checks them at start, each problem reported at its key's line, exit 2.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type IssuedCert, TestCa } from '../helpers/certs.ts';

let dir: string;
let ca: TestCa;
let server: IssuedCert;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'peregrine-validate-'));
  ca = await TestCa.create();
  const other = await ca.server();
  server = await ca.server();
  writeFileSync(join(dir, 'good.crt'), server.cert);
  writeFileSync(join(dir, 'good.key'), server.key);
  writeFileSync(join(dir, 'other.key'), other.key);
  writeFileSync(join(dir, 'ca.crt'), ca.cert);
  writeFileSync(join(dir, 'garbage.crt'), 'this is not PEM\n');
  writeFileSync(join(dir, 'garbage.key'), '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n');
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function validate(yaml: string): { file: string; status: number | null; stdout: string; stderr: string[] } {
  const file = join(dir, `gateway-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, yaml);
  const result = spawnSync(process.execPath, ['src/main.ts', 'validate', file], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  return {
    file,
    status: result.status,
    stdout: result.stdout,
    stderr: result.stderr.split('\n').filter(Boolean),
  };
}

describe('peregrine validate: certificate files', () => {
  it('reports a missing file, non-PEM files and a mismatched key at their lines, exit 2', () => {
    const { file, status, stdout, stderr } = validate(
      [
        'listeners:',
        '  - name: missing',
        '    address: 127.0.0.1:8443',
        '    tls:',
        `      cert: ${dir}/nope.crt`,
        `      key: ${dir}/good.key`,
        '  - name: garbage',
        '    address: 127.0.0.1:8444',
        '    tls:',
        `      cert: ${dir}/garbage.crt`,
        `      key: ${dir}/garbage.key`,
        '  - name: mismatched',
        '    address: 127.0.0.1:8445',
        '    tls:',
        `      cert: ${dir}/good.crt`,
        `      key: ${dir}/other.key`,
        '      clientAuth: required',
        `      clientCa: ${dir}/garbage.crt`,
        '',
      ].join('\n'),
    );
    expect(stdout).toBe('');
    expect(stderr).toEqual([
      `${file}:5 listeners.0.tls.cert: certificate ${dir}/nope.crt: cannot read (ENOENT)`,
      `${file}:10 listeners.1.tls.cert: certificate ${dir}/garbage.crt: no PEM certificate found`,
      `${file}:11 listeners.1.tls.key: key ${dir}/garbage.key: not a PEM private key (encrypted keys are not supported)`,
      `${file}:16 listeners.2.tls.key: key ${dir}/other.key does not match certificate ${dir}/good.crt`,
      `${file}:18 listeners.2.tls.clientCa: clientCa ${dir}/garbage.crt: no PEM certificate found`,
    ]);
    expect(status).toBe(2);
  });

  it('reports a problem of an SNI certificate at its entry in tls.certificates', () => {
    const { file, status, stderr } = validate(
      [
        'listeners:',
        '  - name: edge',
        '    address: 127.0.0.1:8443',
        '    tls:',
        `      cert: ${dir}/good.crt`,
        `      key: ${dir}/good.key`,
        '      certificates:',
        `        - cert: ${dir}/good.crt`,
        `          key: ${dir}/other.key`,
        '',
      ].join('\n'),
    );
    expect(stderr).toEqual([
      `${file}:9 listeners.0.tls.certificates.0.key: key ${dir}/other.key does not match certificate ${dir}/good.crt`,
    ]);
    expect(status).toBe(2);
  });

  it('accepts a listener whose files are a usable set', () => {
    const { file, status, stdout, stderr } = validate(
      [
        'listeners:',
        '  - name: edge',
        '    address: 127.0.0.1:8443',
        '    tls:',
        `      cert: ${dir}/good.crt`,
        `      key: ${dir}/good.key`,
        '      clientAuth: optional',
        `      clientCa: ${dir}/ca.crt`,
        '',
      ].join('\n'),
    );
    expect(stderr).toEqual([]);
    expect(stdout).toBe(`ok: ${file}\n`);
    expect(status).toBe(0);
  });

  it("reports an upstream's CA and client certificate problems at their keys, and accepts a usable set", () => {
    const upstream = (lines: string[]) =>
      validate(
        [
          'listeners:',
          '  - name: edge',
          '    address: 127.0.0.1:8080',
          'upstreams:',
          '  orders:',
          '    endpoints: [https://10.0.0.5:8443]',
          '    tls:',
          ...lines,
          '',
        ].join('\n'),
      );
    const bad = upstream([
      `      ca: ${dir}/garbage.crt`,
      `      cert: ${dir}/good.crt`,
      `      key: ${dir}/other.key`,
      '      identity: { expect: [spiffe://prod.example/ns/shop/sa/orders] }',
    ]);
    expect(bad.stderr).toEqual([
      `${bad.file}:8 upstreams.orders.tls.ca: ca ${dir}/garbage.crt: no PEM certificate found`,
      `${bad.file}:10 upstreams.orders.tls.key: key ${dir}/other.key does not match certificate ${dir}/good.crt`,
    ]);
    expect(bad.status).toBe(2);
    const good = upstream([
      `      ca: ${dir}/ca.crt`,
      `      cert: ${dir}/good.crt`,
      `      key: ${dir}/good.key`,
      '      identity: { expectPattern: "spiffe://prod.example/ns/*/sa/{service}" }',
    ]);
    expect([good.stderr, good.status]).toEqual([[], 0]);
  });
});

describe('peregrine validate: mode sidecar', () => {
  const sidecar = (identity: string[], registry: string[] = []) =>
    validate(
      [
        'mode: sidecar',
        'sidecar:',
        '  service: orders',
        '  identity:',
        '    trustDomain: prod.example',
        ...identity,
        '  inbound: { app: "http://127.0.0.1:8080" }',
        '  outbound: { services: [payments] }',
        '  registry:',
        '    url: https://registry.internal:9902',
        ...registry,
        '',
      ].join('\n'),
    );

  it("reports the identity's files and the registry token at their keys, and accepts a usable set", () => {
    const bad = sidecar(
      [`    cert: ${dir}/good.crt`, `    key: ${dir}/other.key`, `    ca: ${dir}/nope.crt`],
      ['    token: { env: PEREGRINE_VALIDATE_TEST_UNSET_TOKEN }'],
    );
    expect(bad.stderr).toEqual([
      `${bad.file}:7 sidecar.identity.key: key ${dir}/other.key does not match certificate ${dir}/good.crt`,
      `${bad.file}:8 sidecar.identity.ca: ca ${dir}/nope.crt: cannot read (ENOENT)`,
      `${bad.file}:13 sidecar.registry.token: registry token: environment variable PEREGRINE_VALIDATE_TEST_UNSET_TOKEN is not set`,
    ]);
    expect(bad.status).toBe(2);
    const good = sidecar([`    cert: ${dir}/good.crt`, `    key: ${dir}/good.key`, `    ca: ${dir}/ca.crt`]);
    expect([good.stderr, good.status]).toEqual([[], 0]);
  });

  it('refuses the sections a sidecar derives', () => {
    const { file, stderr, status } = validate(
      [
        'mode: sidecar',
        'listeners: [{ name: edge, address: "127.0.0.1:8080" }]',
        'sidecar:',
        '  service: orders',
        `  identity: { trustDomain: prod.example, cert: ${dir}/good.crt, key: ${dir}/good.key, ca: ${dir}/ca.crt }`,
        '  registry: { url: "https://registry.internal:9902" }',
        '',
      ].join('\n'),
    );
    expect(stderr).toEqual([
      `${file}:2 listeners: not in mode sidecar: the sidecar derives its listeners from sidecar.inbound and sidecar.outbound`,
    ]);
    expect(status).toBe(2);
  });
});

describe('peregrine validate: unknown keys', () => {
  it('suggests the nearest known key where one is close, wherever the key sits', () => {
    const { file, status, stderr } = validate(
      [
        'listeners:',
        '  - name: edge',
        '    address: 127.0.0.1:8080',
        'upstreams:',
        '  users:',
        '    endpoints: [http://127.0.0.1:3001]',
        '    retrys: { maxAttempts: 2 }',
        '    circuitbreaker: {}',
        '    colour: blue',
        'routes:',
        '  - name: users',
        '    upstream: users',
        '    match: { pathh: /users }',
        '',
      ].join('\n'),
    );
    expect(stderr).toEqual([
      `${file}:7 upstreams.users.retrys: unknown key "retrys"; did you mean "retries"?`,
      `${file}:8 upstreams.users.circuitbreaker: unknown key "circuitbreaker"; did you mean "circuitBreaker"?`,
      `${file}:9 upstreams.users.colour: unknown key "colour"`,
      `${file}:13 routes.0.match.pathh: unknown key "pathh"; did you mean "path"?`,
    ]);
    expect(status).toBe(2);
  });
});

describe('peregrine validate: route policies', () => {
  it('reports an unknown policy kind and a reference to a missing policy at their lines, exit 2', () => {
    const { file, status, stdout, stderr } = validate(
      [
        'listeners: [{ name: edge, address: 127.0.0.1:8080 }]',
        'upstreams: { u: { endpoints: [http://127.0.0.1:3001] } }',
        'policies:',
        '  mesh: { kind: identity, allow: [spiffe://prod/ns/payments/sa/api] }',
        '  limits: { kind: quota }',
        'routes:',
        '  - { name: r, upstream: u, policies: [mesh, limit] }',
        '',
      ].join('\n'),
    );
    expect(stdout).toBe('');
    expect(stderr).toEqual([
      `${file}:5 policies.limits.kind: unknown policy kind "quota" (kinds: identity, jwt, rate_limit)`,
      `${file}:7 routes.0.policies.1: unknown policy "limit"`,
    ]);
    expect(status).toBe(2);
  });
});

describe('peregrine validate: the admin port', () => {
  it("checks the admin listener's certificate files and its token, at their lines", () => {
    writeFileSync(join(dir, 'short.token'), 'too-short\n');
    const { file, status, stderr } = validate(
      [
        'listeners:',
        '  - name: edge',
        '    address: 127.0.0.1:8080',
        'admin:',
        '  address: 0.0.0.0:9901',
        '  tls:',
        `    cert: ${dir}/garbage.crt`,
        `    key: ${dir}/good.key`,
        '  auth:',
        '    token:',
        `      file: ${dir}/short.token`,
        '',
      ].join('\n'),
    );
    expect(status).toBe(2);
    expect(stderr).toEqual([
      expect.stringMatching(new RegExp(`^${file}:7 admin\\.tls\\.cert: .*no PEM certificate found`)),
      expect.stringMatching(
        new RegExp(`^${file}:10 admin\\.auth\\.token: admin token: shorter than 16 characters`),
      ),
    ]);
  });
});

describe('peregrine validate: Redis', () => {
  /** A gateway on `rediss://` whose `redis.tls` section holds `lines` (from line 7 on). */
  const redisTls = (...lines: string[]) =>
    [
      'listeners:',
      '  - name: edge',
      '    address: 127.0.0.1:8080',
      'redis:',
      '  url: rediss://redis:6380/0',
      '  tls:',
      ...lines.map((l) => `    ${l}`),
      '',
    ].join('\n');

  it('reads the Redis password as the gateway would, and reports it at its line', () => {
    const { file, status, stderr } = validate(
      [
        'listeners:',
        '  - name: edge',
        '    address: 127.0.0.1:8080',
        'redis:',
        '  url: redis://redis:6379/0',
        '  password:',
        `    file: ${dir}/no-such-redis-password`,
        '',
      ].join('\n'),
    );
    expect(status).toBe(2);
    expect(stderr).toEqual([
      `${file}:6 redis.password: redis password: cannot read ${dir}/no-such-redis-password (ENOENT)`,
    ]);
  });

  it("reports a Redis CA bundle that holds no certificate at redis.tls's line", () => {
    writeFileSync(join(dir, 'not-a-ca.pem'), 'hello\n');
    const { file, status, stderr } = validate(redisTls(`ca: ${dir}/not-a-ca.pem`));
    expect(status).toBe(2);
    expect(stderr).toEqual([`${file}:7 redis.tls.ca: ca ${dir}/not-a-ca.pem: no PEM certificate found`]);
  });

  it("reports a Redis client key that is not the certificate's, and an unreadable certificate, at their lines", () => {
    const redis = (cert: string, key: string) =>
      redisTls(`ca: ${dir}/ca.crt`, `cert: ${cert}`, `key: ${key}`);
    const mismatched = validate(redis(`${dir}/good.crt`, `${dir}/other.key`));
    expect(mismatched.status).toBe(2);
    expect(mismatched.stderr).toEqual([
      `${mismatched.file}:9 redis.tls.key: key ${dir}/other.key does not match certificate ${dir}/good.crt`,
    ]);
    const missing = validate(redis(`${dir}/nope.crt`, `${dir}/good.key`));
    expect(missing.stderr).toEqual([
      `${missing.file}:8 redis.tls.cert: certificate ${dir}/nope.crt: cannot read (ENOENT)`,
    ]);
    const good = validate(redis(`${dir}/good.crt`, `${dir}/good.key`));
    expect([good.status, good.stderr]).toEqual([0, []]);
  });

  it('refuses a Redis client certificate without its key', () => {
    const { file, status, stderr } = validate(redisTls(`cert: ${dir}/good.crt`));
    expect(status).toBe(2);
    expect(stderr).toEqual([
      `${file}:6 redis.tls.key: cert and key come together (the client certificate and its private key)`,
    ]);
  });
});
