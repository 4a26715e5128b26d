import { writeFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConfigInput } from '../../src/config/schema.ts';
import { startGateway, type TestGateway, writeConfig } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let a: TestUpstream;
let b: TestUpstream;

beforeAll(async () => {
  a = await startUpstream();
  b = await startUpstream();
});
afterAll(async () => {
  await a?.close();
  await b?.close();
});

function base(): Partial<ConfigInput> {
  return {
    upstreams: { a: { endpoints: [a.url] } },
    routes: [{ name: 'a', match: { path: '/a' }, upstream: 'a', rewrite: { stripPrefix: '/a' } }],
  };
}

function withB(): Partial<ConfigInput> {
  return {
    upstreams: { a: { endpoints: [a.url] }, b: { endpoints: [b.url] } },
    routes: [
      { name: 'a', match: { path: '/a' }, upstream: 'a', rewrite: { stripPrefix: '/a' } },
      { name: 'b', match: { path: '/b' }, upstream: 'b', rewrite: { stripPrefix: '/b' } },
    ],
  };
}

async function metric(gw: TestGateway, line: RegExp): Promise<number | undefined> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const m = text.split('\n').find((l) => line.test(l));
  return m === undefined ? undefined : Number(m.split(' ').pop());
}

describe('hot reload', () => {
  it('adds a route without dropping in-flight requests, which finish on their snapshot', async () => {
    const gw = await startGateway(base(), { asFile: true });
    try {
      const inflight = Promise.all(
        Array.from({ length: 5 }, () => fetch(`${gw.url}/a/delay/600`).then((r) => r.status)),
      );
      await waitFor(() => a.requests.filter((r) => r.url === '/delay/600').length >= 5);
      expect((await fetch(`${gw.url}/b/x`)).status).toBe(404);

      writeConfig(gw.configFile!, withB());
      const result = await gw.gateway.reload('test');
      expect(result.ok).toBe(true);

      const res = await fetch(`${gw.url}/b/x`);
      expect(res.status).toBe(200);
      expect(b.requests.some((r) => r.url === '/x')).toBe(true);
      expect(await inflight).toEqual([200, 200, 200, 200, 200]);

      const routes = (await (await fetch(`${gw.adminUrl}/v1/routes`)).json()) as {
        routes: { name: string }[];
      };
      expect(routes.routes.map((r) => r.name).sort()).toEqual(['a', 'b']);
      expect(await metric(gw, /^peregrine_config_reloads_total\{outcome="success"\}/)).toBe(2);
      expect(await metric(gw, /^peregrine_config_last_reload_successful /)).toBe(1);
    } finally {
      await gw.close();
    }
  });

  it('keeps the upstream pool of an unchanged upstream across a reload', async () => {
    const gw = await startGateway(base(), { asFile: true });
    try {
      const before = gw.gateway.currentSnapshot().clusters.get('a');
      writeConfig(gw.configFile!, withB());
      expect((await gw.gateway.reload('test')).ok).toBe(true);
      expect(gw.gateway.currentSnapshot().clusters.get('a')).toBe(before);
      expect(gw.gateway.currentSnapshot().version).toBe(2);
    } finally {
      await gw.close();
    }
  });

  it('a policy-only change keeps the warm upstream connections; a pool change opens new ones; no request fails', async () => {
    // Requests to /held wait until the test releases them, however long the reload takes.
    const held: ServerResponse[] = [];
    const up = await startUpstream((req, res) => {
      if (req.url !== '/held') return false;
      held.push(res);
      return true;
    });
    let opened = 0;
    let open = 0;
    up.server.on('connection', (socket: Socket) => {
      opened++;
      open++;
      socket.on('close', () => open--);
    });
    const config = (policy: Record<string, unknown>): Partial<ConfigInput> => ({
      upstreams: { c: { endpoints: [up.url], ...policy } },
      routes: [{ name: 'c', match: { path: '/c' }, upstream: 'c', rewrite: { stripPrefix: '/c' } }],
    });
    const gw = await startGateway(config({}), { asFile: true });
    const statuses: number[] = [];
    const get = async (path: string): Promise<void> => {
      statuses.push((await fetch(`${gw.url}/c${path}`)).status);
    };
    const endpoint = () => gw.gateway.currentSnapshot().clusters.get('c')!.endpoints[0]!;
    /** Two requests that are running on the upstream until released. */
    const startSlow = async (): Promise<{ done: Promise<unknown> }> => {
      const done = Promise.all([get('/held'), get('/held')]);
      await waitFor(() => held.length === 2);
      return { done };
    };
    const release = (): void => {
      for (const res of held.splice(0)) res.end('ok');
    };
    try {
      await Promise.all([get('/delay/50'), get('/delay/50'), get('/delay/50')]);
      const warm = opened;
      expect(warm).toBeGreaterThan(0);
      const before = endpoint();

      let slow = await startSlow();
      expect(before.inFlight).toBe(2);
      writeConfig(
        gw.configFile!,
        config({
          retries: { maxAttempts: 3, statuses: [503] },
          timeouts: { response: '5s' },
          circuitBreaker: { consecutiveFailures: 3 },
        }),
      );
      expect((await gw.gateway.reload('test')).ok).toBe(true);
      expect(gw.gateway.currentSnapshot().clusters.get('c')!.config.retries.maxAttempts).toBe(3);
      expect(endpoint()).toBe(before);
      expect(before.inFlight).toBe(2);
      release();
      await slow.done;
      for (let i = 0; i < 5; i++) await get('/x');
      await Promise.all([get('/delay/50'), get('/delay/50'), get('/delay/50')]);
      expect(opened).toBe(warm);

      slow = await startSlow();
      writeConfig(gw.configFile!, config({ retries: { maxAttempts: 3 }, pool: { keepAliveTimeout: '8s' } }));
      expect((await gw.gateway.reload('test')).ok).toBe(true);
      expect(endpoint()).not.toBe(before);
      expect(before.inFlight).toBe(2);
      release();
      await slow.done;
      await get('/x');
      expect(opened).toBeGreaterThan(warm);
      // The replaced pool closed its connections once its requests were done.
      await waitFor(() => open === 1);

      expect(statuses.length).toBe(16);
      expect(statuses.every((s) => s === 200)).toBe(true);
    } finally {
      await gw.close();
      await up.close();
    }
  });

  it('rejects a broken reload, keeps serving the old config, counts it and shows it on the admin API', async () => {
    const gw = await startGateway(base(), { asFile: true });
    try {
      writeFileSync(
        gw.configFile!,
        [
          'listeners:',
          '  - name: edge',
          '    address: 127.0.0.1:0',
          'upstreams:',
          '  a: { endpoints: [ "http://127.0.0.1:1" ] }',
          'routes:',
          '  - name: a',
          '    upstream: missing',
          '',
        ].join('\n'),
      );
      const result = await gw.gateway.reload('test');
      expect(result.ok).toBe(false);

      expect((await fetch(`${gw.url}/a/still`)).status).toBe(200);
      const errors = (await (await fetch(`${gw.adminUrl}/v1/config/errors`)).json()) as {
        lastReloadFailed: boolean;
        failure: { issues: { line?: number; path: string; message: string }[] };
      };
      expect(errors.lastReloadFailed).toBe(true);
      const issue = errors.failure.issues.find((i) => i.path === 'routes.0.upstream');
      expect(issue?.line).toBe(8);
      expect(issue?.message).toContain('missing');
      expect(await metric(gw, /^peregrine_config_reloads_total\{outcome="failure"\}/)).toBe(1);
      expect(await metric(gw, /^peregrine_config_last_reload_successful /)).toBe(0);
      expect(gw.logs.lines().some((l) => String(l.msg).includes('reload rejected'))).toBe(true);

      // A YAML syntax error is rejected the same way.
      writeFileSync(gw.configFile!, 'listeners: [\n');
      expect((await gw.gateway.reload('test')).ok).toBe(false);
      expect((await fetch(`${gw.url}/a/still`)).status).toBe(200);

      // And a good file afterwards is taken and clears the error.
      writeConfig(gw.configFile!, withB());
      expect((await gw.gateway.reload('test')).ok).toBe(true);
      const cleared = (await (await fetch(`${gw.adminUrl}/v1/config/errors`)).json()) as {
        lastReloadFailed: boolean;
      };
      expect(cleared.lastReloadFailed).toBe(false);
    } finally {
      await gw.close();
    }
  });

  it('reloads on file change when watching is on', async () => {
    const gw = await startGateway({ ...base(), lifecycle: { watchConfig: true } }, { asFile: true });
    try {
      expect((await fetch(`${gw.url}/b/x`)).status).toBe(404);
      writeConfig(gw.configFile!, { ...withB(), lifecycle: { watchConfig: true } });
      await waitFor(() => gw.gateway.currentSnapshot().version === 2, 10_000);
      expect((await fetch(`${gw.url}/b/x`)).status).toBe(200);
    } finally {
      await gw.close();
    }
  });

  it('exposes the effective config with secrets redacted', async () => {
    const gw = await startGateway({
      upstreams: { a: { endpoints: ['http://user:hunter2@127.0.0.1:1'] } },
      routes: [{ name: 'a', upstream: 'a' }],
    });
    try {
      const text = await (await fetch(`${gw.adminUrl}/v1/config`)).text();
      expect(text).not.toContain('hunter2');
      expect(JSON.parse(text).config.routes[0].name).toBe('a');
    } finally {
      await gw.close();
    }
  });

  it('route latency histograms follow the config across a reload; the scrape streams them', async () => {
    const telemetry = { metrics: { routeHistograms: false, latencyBuckets: [0.01, 1] } };
    const routes = (histogram: string) => ({
      telemetry,
      upstreams: { a: { endpoints: [a.url] } },
      routes: ['x', 'y'].map((name) => ({
        name,
        match: { path: `/${name}` },
        upstream: 'a',
        ...(name === histogram ? { metrics: { histogram: true } } : {}),
      })),
    });
    const gw = await startGateway(routes('x'), { asFile: true });
    const scrape = async () => (await fetch(`${gw.adminUrl}/metrics`)).text();
    const latency = (body: string, route: string) =>
      body
        .split('\n')
        .filter((l) => l.startsWith('peregrine_request_duration_seconds') && l.includes(`route="${route}"`));
    try {
      for (const path of ['/x', '/y', '/y']) expect((await fetch(`${gw.url}${path}`)).status).toBe(200);
      let body = await scrape();
      // Two buckets, +Inf, _sum, _count.
      expect(latency(body, 'x')).toHaveLength(5);
      expect(latency(body, 'y')).toEqual([]);
      expect(body).toMatch(
        /peregrine_request_duration_seconds_count\{listener="edge",route="_other",method="GET",status="200"\} 2\n/,
      );
      expect(body).toMatch(
        /peregrine_requests_total\{listener="edge",route="y",method="GET",status="200"\} 2\n/,
      );

      writeConfig(gw.configFile!, routes('y'));
      expect((await gw.gateway.reload('test')).ok).toBe(true);
      for (const path of ['/x', '/y']) expect((await fetch(`${gw.url}${path}`)).status).toBe(200);
      body = await scrape();
      expect(latency(body, 'x')).toEqual([]);
      expect(latency(body, 'y')).toContain(
        'peregrine_request_duration_seconds_count{listener="edge",route="y",method="GET",status="200"} 1',
      );
      expect(body).toMatch(
        /peregrine_request_duration_seconds_count\{listener="edge",route="_other",method="GET",status="200"\} 3\n/,
      );
      expect(body.endsWith('\n')).toBe(true);
    } finally {
      await gw.close();
    }
  });
});

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
