/**
 * A gateway against a real redis-server that requires authentication (`--requirepass`, and an ACL
 * user): `redis.password` (a variable or a file) and `redis.username` reach every connection the
 * registry store and the rate limits open, over TLS too (`rediss://`, `redis.tls.ca`: a CA made in
 * the test; without it the server's certificate is refused); a wrong password leaves Redis unusable but the gateway
 * serving (with the fallback the policy names) and never shows the password; one that cannot be
 * read stops the start, naming the setting. A Redis that demands client certificates
 * (`--tls-auth-clients yes`) takes every connection of a gateway with `redis.tls.cert`/`key` from
 * its CA, and refuses one without a certificate or with one from another CA: the gateway logs why,
 * keeps serving and retries.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ConfigInput } from '../../src/config/schema.ts';
import { SecretLoadError } from '../../src/config/secret-ref.ts';
import { eventually } from '../conformance/registry-store.ts';
import { type CertFiles, removeCertFiles, TestCa, writeCertFiles } from '../helpers/certs.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { freePort } from '../helpers/ports.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const PASSWORD = randomBytes(24).toString('hex');
const USER_PASSWORD = randomBytes(24).toString('hex');

let redis: TestRedis;
let up: TestUpstream;
let dir: string;
let certs: CertFiles;
let tlsPort: number;
/** Demands a client certificate from `certs.ca`'s CA; `client` is one, `stranger` one from another CA. */
let mtlsRedis: TestRedis;
let mtlsPort: number;
let client: CertFiles;
let stranger: CertFiles;
const open: TestGateway[] = [];

beforeAll(async () => {
  const ca = await TestCa.create();
  certs = writeCertFiles(await ca.server(), ca.cert);
  /** TLS beside the plain port (which the helper and CLIENT LIST use), on `port`. */
  const tlsArgs = (port: number, authClients: 'yes' | 'no') => [
    '--tls-port',
    String(port),
    '--tls-cert-file',
    certs.cert,
    '--tls-key-file',
    certs.key,
    '--tls-ca-cert-file',
    certs.ca,
    '--tls-auth-clients',
    authClients,
  ];
  tlsPort = await freePort();
  // Clients need no certificate.
  redis = await startRedis({ password: PASSWORD, args: tlsArgs(tlsPort, 'no') });
  mtlsPort = await freePort();
  mtlsRedis = await startRedis({ password: PASSWORD, args: tlsArgs(mtlsPort, 'yes') });
  client = writeCertFiles(await ca.issue({ cn: 'peregrine-gateway', eku: ['clientAuth'] }), ca.cert);
  const other = await TestCa.create('Another CA');
  stranger = writeCertFiles(await other.issue({ cn: 'peregrine-gateway', eku: ['clientAuth'] }), ca.cert);
  up = await startUpstream();
  dir = mkdtempSync(join(tmpdir(), 'peregrine-redis-auth-'));
});
afterEach(async () => {
  for (const g of open.splice(0)) await g.close();
});
afterAll(async () => {
  await up?.close();
  await redis?.close();
  await mtlsRedis?.close();
  rmSync(dir, { recursive: true, force: true });
  removeCertFiles();
});

/** The registry on Redis, and a route limited to 2 requests a minute counted in Redis (503 if it cannot count). */
function config(redisSection: Record<string, unknown>, prefix: string): Partial<ConfigInput> {
  return {
    redis: { url: redis.url, keyPrefix: prefix, ...redisSection },
    registry: { store: 'redis' },
    policies: {
      shared: {
        kind: 'rate_limit',
        limits: [{ points: 2, duration: '60s' }],
        store: { type: 'redis', onError: 'fail-closed', timeout: '1s' },
      },
    },
    upstreams: { echo: { endpoints: [up.url] } },
    routes: [{ name: 'r', match: { path: '/' }, upstream: 'echo', policies: ['shared'] }],
  } as Partial<ConfigInput>;
}

async function start(input: Partial<ConfigInput>, env: NodeJS.ProcessEnv): Promise<TestGateway> {
  const g = await startGateway(input, { env });
  open.push(g);
  return g;
}

const statuses = async (url: string, n: number): Promise<number[]> => {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await fetch(url)).status);
  return out;
};

/** The commands connection and the rate limits' are ready (fail-closed answers 503 before). */
async function connected(g: TestGateway): Promise<void> {
  await eventually(() => {
    expect(g.gateway.redis!.ready).toBe(true);
    expect(g.gateway.redis!.rateLimitHealth()).toMatchObject({ connection: 'ratelimits', state: 'ready' });
  });
}

/** `CLIENT LIST` lines of the connections named `name*` (only an authenticated client can SETNAME). */
async function clients(name: string, server = redis): Promise<string[]> {
  const list = await server.command('CLIENT', 'LIST');
  return list.split('\n').filter((l) => new RegExp(`\\bname=${name}(-\\w+)?\\s`).test(l));
}

describe('Redis that requires authentication', () => {
  it('is refused without a password (the server under test does require one)', async () => {
    const { send } = await import('../helpers/redis.ts');
    expect(await send(redis.port, ['PING'])).toMatch(/^-NOAUTH/);
  });

  it('password from a variable: the registry store and the rate limits authenticate and count', async () => {
    const prefix = `auth-${randomUUID().slice(0, 8)}:`;
    const name = `pg-env-${randomUUID().slice(0, 6)}`;
    const g = await start(
      config({ password: { env: 'TEST_REDIS_PASSWORD' }, connectionName: name }, prefix),
      { TEST_REDIS_PASSWORD: PASSWORD },
    );
    await connected(g);
    // Counted in Redis: the third request of the minute is refused with 429 (503 if Redis failed).
    expect(await statuses(`${g.url}/`, 3)).toEqual([200, 200, 429]);
    expect((await redis.command('KEYS', `${prefix}*`)).length).toBeGreaterThan(5);
    // The commands, pub/sub (the registry store) and rate limit connections are all in, as `default`.
    await eventually(async () => {
      const lines = await clients(name);
      expect(lines.map((l) => /\bname=(\S+)/.exec(l)![1]).sort()).toEqual([
        name,
        `${name}-rl`,
        `${name}-sub`,
      ]);
      for (const l of lines) expect(l).toMatch(/\buser=default\b/);
    });
    expect(g.logs.text()).not.toContain(PASSWORD);
    const shown = await (await fetch(`${g.adminUrl}/v1/config`)).text();
    expect(shown).not.toContain(PASSWORD);
  });

  it('an ACL user with its password from a file', async () => {
    const prefix = `acl-${randomUUID().slice(0, 8)}:`;
    const user = `gw-${randomUUID().slice(0, 6)}`;
    // The user may touch only its prefix's keys and channels.
    expect(
      await redis.command(
        'ACL',
        'SETUSER',
        user,
        'on',
        `>${USER_PASSWORD}`,
        `~${prefix}*`,
        `&${prefix}*`,
        '+@all',
      ),
    ).toBe('+OK\r\n');
    const file = join(dir, 'redis-password');
    writeFileSync(file, `${USER_PASSWORD}\n`, { mode: 0o600 });
    const name = `pg-acl-${randomUUID().slice(0, 6)}`;
    const g = await start(config({ username: user, password: { file }, connectionName: name }, prefix), {});
    await connected(g);
    expect(await statuses(`${g.url}/`, 3)).toEqual([200, 200, 429]);
    await eventually(async () => {
      const lines = await clients(name);
      expect(lines).toHaveLength(3);
      for (const l of lines) expect(l).toMatch(new RegExp(`\\buser=${user}\\b`));
    });
  });

  it('a wrong password: the gateway serves, Redis is unusable and says why, the password is never shown', async () => {
    const wrong = randomBytes(24).toString('hex');
    const g = await start(config({ password: { env: 'P' } }, `wrong-${randomUUID().slice(0, 8)}:`), {
      P: wrong,
    });
    await eventually(() =>
      expect(g.gateway.redis!.health().lastError?.message).toMatch(/WRONGPASS|invalid/i),
    );
    expect(g.gateway.redis!.ready).toBe(false);
    // The policy cannot count: fail-closed, never a hang.
    expect(await statuses(`${g.url}/`, 1)).toEqual([503]);
    expect(g.logs.text()).not.toContain(wrong);
    expect(JSON.stringify(g.gateway.redis!.health())).not.toContain(wrong);
  });

  it('over TLS: rediss:// with the CA of redis.tls.ca, and refused without it', async () => {
    const prefix = `tls-${randomUUID().slice(0, 8)}:`;
    const name = `pg-tls-${randomUUID().slice(0, 6)}`;
    const url = `rediss://127.0.0.1:${tlsPort}`;
    const g = await start(
      config({ url, password: { env: 'P' }, tls: { ca: certs.ca }, connectionName: name }, prefix),
      { P: PASSWORD },
    );
    await connected(g);
    expect(await statuses(`${g.url}/`, 3)).toEqual([200, 200, 429]);
    await eventually(async () => expect(await clients(name)).toHaveLength(3));
    // Node's public CAs do not know the test CA: the certificate is refused, nothing is sent.
    const untrusted = await start(config({ url, password: { env: 'P' } }, `tls-no-ca:`), { P: PASSWORD });
    await eventually(() =>
      expect(untrusted.gateway.redis!.health().lastError?.message).toMatch(/certificate/i),
    );
    expect(untrusted.gateway.redis!.ready).toBe(false);
  });

  it('a CA file that is not a certificate stops the start, naming the file', async () => {
    const err = await start(
      config({ url: `rediss://127.0.0.1:${tlsPort}`, tls: { ca: certs.key } }, 'x:'),
      {},
    ).catch((e: unknown) => e);
    expect((err as Error).message).toBe(`ca ${certs.key}: no PEM certificate found`);
  });

  it('a password that cannot be read stops the start, naming the setting', async () => {
    const err = await start(config({ password: { env: 'UNSET_REDIS_PASSWORD' } }, 'x:'), {}).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SecretLoadError);
    expect((err as Error).message).toBe(
      'redis password: environment variable UNSET_REDIS_PASSWORD is not set',
    );
  });
});

describe('Redis that demands a client certificate (tls-auth-clients yes)', () => {
  const url = () => `rediss://127.0.0.1:${mtlsPort}`;
  const mtls = (tls: Record<string, string>, name: string) =>
    config({ url: url(), password: { env: 'P' }, tls, connectionName: name }, `${name}:`);

  it('with redis.tls.cert and key: every connection is in, the registry and the rate limits work', async () => {
    const name = `pg-mtls-${randomUUID().slice(0, 6)}`;
    const g = await start(mtls({ ca: certs.ca, cert: client.cert, key: client.key }, name), { P: PASSWORD });
    await connected(g);
    // Counted in Redis (503 if it could not count, fail-closed).
    expect(await statuses(`${g.url}/`, 3)).toEqual([200, 200, 429]);
    // The registry: what one replica registers, Redis holds.
    const spec = {
      address: '10.0.0.7',
      port: 8080,
      protocol: 'http' as const,
      zone: 'a',
      version: '1',
      weight: 1,
      metadata: {},
    };
    await g.gateway.registry!.store.register(
      { service: 'orders', id: 'o-1', spec, state: 'active', ttlMs: 30_000 },
      'test',
    );
    expect(await mtlsRedis.command('HKEYS', `${name}:registry:spec`)).toMatch(/orders.*o-1/);
    // Commands, pub/sub and rate limits: all three over TLS with the certificate.
    await eventually(async () => expect(await clients(name, mtlsRedis)).toHaveLength(3));
  });

  it('without a client certificate: refused, logged, the gateway serves and retries', async () => {
    const name = `pg-nocert-${randomUUID().slice(0, 6)}`;
    const g = await start(mtls({ ca: certs.ca }, name), { P: PASSWORD });
    const why = /tls-auth-clients yes.*set redis\.tls\.cert and redis\.tls\.key/;
    await eventually(() => expect(g.gateway.redis!.health().lastError?.message).toMatch(why));
    expect(g.gateway.redis!.ready).toBe(false);
    expect(g.logs.text()).toMatch(/cannot connect to Redis/);
    expect(g.logs.text()).toMatch(why);
    expect(await statuses(`${g.url}/`, 1)).toEqual([503]);
    expect(await clients(name, mtlsRedis)).toEqual([]);
    expect(g.logs.text()).not.toContain(PASSWORD);
  });

  it('a client certificate from another CA is refused', async () => {
    const name = `pg-other-${randomUUID().slice(0, 6)}`;
    const g = await start(mtls({ ca: certs.ca, cert: stranger.cert, key: stranger.key }, name), {
      P: PASSWORD,
    });
    // The alert (unknown ca) or, when the client's first command wins the race with it, the reset.
    const why =
      /Redis refused the client certificate of redis\.tls\.cert \(alert: unknown ca\)|after the TLS handshake \(ECONNRESET\): it refused the client certificate of redis\.tls\.cert/;
    await eventually(() => expect(g.gateway.redis!.health().lastError?.message).toMatch(why));
    expect(g.gateway.redis!.ready).toBe(false);
    expect(g.logs.text()).toMatch(why);
    expect(await statuses(`${g.url}/`, 1)).toEqual([503]);
    expect(await clients(name, mtlsRedis)).toEqual([]);
  });

  it("a key that is not the certificate's stops the start, naming both files", async () => {
    const err = await start(mtls({ ca: certs.ca, cert: client.cert, key: stranger.key }, 'x'), {
      P: PASSWORD,
    }).catch((e: unknown) => e);
    expect((err as Error).message).toBe(`key ${stranger.key} does not match certificate ${client.cert}`);
  });
});
