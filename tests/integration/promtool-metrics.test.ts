/**
 * The metrics exposition passes `promtool check metrics` (Prometheus's own lint of names, types,
 * units and help): a live gateway's /metrics after traffic, and a registry with every family the
 * gateway can export (Redis and registry metrics included). promtool is found like every tool the
 * tests run (tests/helpers/tools.ts).
 */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMetrics, renderMetrics } from '../../src/telemetry/metrics.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { findTool, PROMTOOL } from '../helpers/tools.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let up: TestUpstream;
let gw: TestGateway;

beforeAll(async () => {
  up = await startUpstream();
  gw = await startGateway({
    upstreams: { users: { endpoints: [up.url] }, dead: { endpoints: ['http://127.0.0.1:1'] } },
    routes: [
      { name: 'users', match: { path: '/users' }, upstream: 'users' },
      { name: 'dead', match: { path: '/dead' }, upstream: 'dead' },
    ],
  });
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
});

function promtoolCheck(exposition: string): { status: number | null; output: string } {
  const promtool = findTool(PROMTOOL, 'the promtool check metrics test');
  const run = spawnSync(promtool.path, ['check', 'metrics'], {
    input: exposition,
    encoding: 'utf8',
    env: promtool.env,
  });
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}

describe('promtool check metrics', () => {
  it("passes on a live gateway's /metrics after traffic", async () => {
    for (const path of ['/users/1', '/users/2', '/dead', '/nowhere'])
      await (await fetch(`${gw.url}${path}`)).text();
    const body = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(body).toContain('peregrine_requests_total{');
    expect(body).toContain('peregrine_nodejs_eventloop_delay_seconds_bucket');
    const { status, output } = promtoolCheck(body);
    expect(output).toBe('');
    expect(status).toBe(0);
  });

  it('passes on every family the gateway can export', async () => {
    const m = createMetrics({ exemplars: false, version: 'test' });
    try {
      void m.redis;
      void m.registryMetrics;
      m.configureRoutes([{ name: 'users', histogram: undefined, httpRoute: '/users/*' }]);
      m.recordRequest('edge', 'users', 'GET', 200, 0.01, undefined);
      m.recordAttempt('users', 'http://10.0.0.5:8080', 'success', 200, 0.01, undefined);
      const { body } = await renderMetrics(m, undefined);
      const { status, output } = promtoolCheck(body);
      expect(output).toBe('');
      expect(status).toBe(0);
    } finally {
      m.close();
    }
  });
});
