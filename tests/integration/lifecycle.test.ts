/**
 * The real CLI process, started as it ships (the `bin/peregrine.js` launcher, run through its
 * `#!` line): SIGHUP reloads, SIGTERM drains in-flight requests and exits 0.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { type GatewayProcess, startGatewayProcess } from '../helpers/gateway-process.ts';
import { rawExchange, statusCodes } from '../helpers/raw-http.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let up: TestUpstream;
beforeAll(async () => {
  up = await startUpstream();
});
afterAll(async () => {
  await up?.close();
});

function configYaml(routes: { name: string; path: string }[]): string {
  return stringify({
    listeners: [{ name: 'edge', address: '127.0.0.1:0' }],
    admin: { address: '127.0.0.1:0' },
    lifecycle: { drainTimeout: '10s', watchConfig: false },
    upstreams: { up: { endpoints: [up.url] } },
    routes: routes.map((r) => ({ name: r.name, match: { path: r.path }, upstream: 'up' })),
  });
}

async function startCli(file: string): Promise<GatewayProcess> {
  const gw = await startGatewayProcess(file);
  // The process is Node itself (env execs it) with the launcher's V8 flags and malloc setting, so
  // signals reach it.
  expect(readFileSync(`/proc/${gw.child.pid}/cmdline`, 'utf8').split('\0')).toContain(
    '--max-semi-space-size=8',
  );
  expect(readFileSync(`/proc/${gw.child.pid}/environ`, 'utf8').split('\0')).toContain('MALLOC_ARENA_MAX=2');
  return gw;
}

function get(port: number, path: string): Promise<{ status: number; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('process lifecycle', () => {
  it('reloads routes on SIGHUP', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'peregrine-cli-')), 'gateway.yaml');
    writeFileSync(file, configYaml([{ name: 'one', path: '/one' }]));
    const gw = await startCli(file);
    try {
      expect((await get(gw.port, '/two')).status).toBe(404);
      writeFileSync(
        file,
        configYaml([
          { name: 'one', path: '/one' },
          { name: 'two', path: '/two' },
        ]),
      );
      gw.child.kill('SIGHUP');
      const end = Date.now() + 10_000;
      let status = 404;
      while (status === 404 && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 50));
        status = (await get(gw.port, '/two')).status;
      }
      expect(status).toBe(200);
    } finally {
      gw.child.kill('SIGTERM');
      expect(await gw.exit).toBe(0);
    }
  });

  it('on SIGTERM turns unready, refuses new connections, completes in-flight requests and exits 0', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'peregrine-cli-')), 'gateway.yaml');
    writeFileSync(file, configYaml([{ name: 'all', path: '/' }]));
    const gw = await startCli(file);
    expect((await get(gw.adminPort, '/readyz')).status).toBe(200);

    const before = up.requests.length;
    const inflight = Array.from({ length: 5 }, () => get(gw.port, '/delay/1000'));
    const deadline = Date.now() + 5000;
    while (up.requests.length < before + 5 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10));
    expect(up.requests.length).toBe(before + 5);

    gw.child.kill('SIGTERM');
    // Readiness drops while the in-flight requests are still running.
    let ready = 200;
    const until = Date.now() + 2000;
    while (ready === 200 && Date.now() < until) {
      ready = (await get(gw.adminPort, '/readyz').catch(() => ({ status: -1 }))).status;
    }
    expect(ready).toBe(503);
    await expect(get(gw.port, '/late')).rejects.toThrow(/ECONNREFUSED/);

    const results = await Promise.all(inflight);
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    for (const r of results) expect(r.headers.connection).toBe('close');
    expect(await gw.exit).toBe(0);
    expect(gw.logs.some((l) => l.msg === 'stopped')).toBe(true);
    expect(gw.logs.filter((l) => l.type === 'access' && l.status === 200)).toHaveLength(5);
  });

  it('on SIGTERM answers every request pipelined on a connection; only the last response closes it', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'peregrine-cli-')), 'gateway.yaml');
    writeFileSync(file, configYaml([{ name: 'all', path: '/' }]));
    const gw = await startCli(file);
    const before = up.requests.length;
    const exchange = rawExchange(
      gw.port,
      'GET /delay/800 HTTP/1.1\r\nHost: a\r\n\r\nGET /delay/1200 HTTP/1.1\r\nHost: a\r\n\r\n',
      5000,
    );
    const deadline = Date.now() + 5000;
    while (up.requests.length < before + 2 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10));
    expect(up.requests.length).toBe(before + 2);
    gw.child.kill('SIGTERM');

    const { raw, closedByServer } = await exchange;
    expect(statusCodes(raw)).toEqual([200, 200]);
    const heads = raw.split('HTTP/1.1 ').slice(1);
    expect(heads[0]).not.toMatch(/\r\nconnection: close\r\n/i);
    expect(heads[1]).toMatch(/\r\nconnection: close\r\n/i);
    expect(closedByServer).toBe(true);
    expect(await gw.exit).toBe(0);
  });
});
