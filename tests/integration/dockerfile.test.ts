/**
 * The Dockerfile against the code, without Docker: what it copies exists, its entrypoint runs,
 * the config the image runs passes `peregrine validate` and exposes the ports the Dockerfile
 * declares, and its HEALTHCHECK passes against a gateway started as the image starts it (its
 * ENTRYPOINT and CMD, its ENV) and fails once that gateway is gone.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfigFile } from '../../src/config/loader.ts';
import { splitAddress } from '../../src/dataplane/listener/listener.ts';
import { readDockerfile } from '../helpers/dockerfile.ts';
import { freePort } from '../helpers/ports.ts';

const ROOT = join(import.meta.dirname, '../..');

const image = readDockerfile(join(ROOT, 'Dockerfile'));
const { stage } = image;
const workdir = image.workdir!;
/** The image's environment (ENV KEY=value ...). */
const imageEnv = image.env;
const entrypoint = image.entrypoint!;
const cmd = image.cmd!;
const healthcheck = image.healthcheck!;
/** A path inside the image (absolute, or relative to WORKDIR) → the same file in the checkout. */
const inRepo = (path: string) => join(ROOT, relative(workdir, join(workdir, path)));

/** The environment the tests run the image's commands with: its ENV, this Node first on PATH. */
function commandEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const cache = mkdtempSync(join(tmpdir(), 'peregrine-compile-cache-'));
  cleanup.push(() => rmSync(cache, { recursive: true, force: true }));
  return {
    PATH: `${dirname(process.execPath)}:/usr/bin:/bin`,
    HOME: tmpdir(),
    ...imageEnv,
    // The image's cache directory exists only in the image.
    NODE_COMPILE_CACHE: cache,
    ...extra,
  };
}

const cleanup: (() => void | Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

describe('Dockerfile', () => {
  it('copies files that exist, and its entrypoint is an executable in them', () => {
    for (const copy of stage.filter((i) => i.keyword === 'COPY' && !i.args.includes('--from'))) {
      const paths = copy.args.split(/\s+/).filter((a) => !a.startsWith('--'));
      for (const source of paths.slice(0, -1)) expect(existsSync(join(ROOT, source)), source).toBe(true);
    }
    expect(() => accessSync(inRepo(entrypoint[0]!), constants.X_OK)).not.toThrow();
    const version = spawnSync(inRepo(entrypoint[0]!), ['--version'], { env: commandEnv(), encoding: 'utf8' });
    expect(version.stderr).toBe('');
    expect(version.status).toBe(0);
  });

  it('runs a config that passes validate, keeps the admin API on loopback, and exposes its ports', async () => {
    expect(cmd).toEqual(['run']);
    const file = imageEnv.PEREGRINE_CONFIG;
    expect(file, 'the image names its config in ENV PEREGRINE_CONFIG').toBeDefined();
    const validate = spawnSync(inRepo(entrypoint[0]!), ['validate', file!], {
      cwd: ROOT,
      env: commandEnv(),
      encoding: 'utf8',
    });
    expect(validate.stderr).toBe('');
    expect(validate.status).toBe(0);

    const env = process.env;
    try {
      // Loaded with the image's environment only (none of its variables set).
      process.env = { PATH: env.PATH };
      const config = await loadConfigFile(inRepo(file!));
      const admin = splitAddress(config.admin.address);
      expect(admin.host).toBe('127.0.0.1');
      const exposed = image.exposed;
      expect(exposed).toEqual(
        expect.arrayContaining([admin.port, ...config.listeners.map((l) => splitAddress(l.address).port)]),
      );
      expect(config.listeners.map((l) => splitAddress(l.address).host)).toEqual(['0.0.0.0']);
    } finally {
      process.env = env;
    }
  });

  it('has a HEALTHCHECK that passes while the gateway the image starts runs, and fails once it stops', async () => {
    // The image's default addresses, on ports free on this shared machine.
    const env = commandEnv({
      PEREGRINE_LISTEN: `127.0.0.1:${await freePort()}`,
      PEREGRINE_ADMIN: `127.0.0.1:${await freePort()}`,
    });
    const check = () =>
      spawnSync(inRepo(healthcheck[0]!), healthcheck.slice(1), { cwd: ROOT, env, encoding: 'utf8' });

    const gateway: ChildProcess = spawn(inRepo(entrypoint[0]!), [...entrypoint.slice(1), ...cmd], {
      cwd: ROOT,
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    gateway.stderr!.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    const exited = new Promise<number | null>((resolve) => gateway.once('exit', (code) => resolve(code)));
    cleanup.push(async () => {
      if (gateway.exitCode === null) {
        gateway.kill('SIGKILL');
        await exited;
      }
    });

    // As Docker does: run the check until it passes (the start period), here for up to 20 s.
    const deadline = Date.now() + 20_000;
    let last = check();
    while (last.status !== 0 && Date.now() < deadline && gateway.exitCode === null) {
      await new Promise((r) => setTimeout(r, 200));
      last = check();
    }
    expect(last.status, `healthcheck: ${last.stderr}\ngateway: ${stderr}`).toBe(0);

    gateway.kill('SIGTERM');
    expect(await exited).toBe(0);
    const after = check();
    expect(after.status).toBe(1);
    expect(after.stderr).toMatch(/^unhealthy: http:\/\/127\.0\.0\.1:\d+\/healthz: ECONNREFUSED\n$/);
  });
});
