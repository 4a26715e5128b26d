/**
 * "Nothing lost, nothing crossed" under concurrency: many keep-alive clients, an upstream that
 * answers in a random order (random delays, some bodies streamed in pieces), and five
 * configuration reloads during the run. Every request gets exactly one response, the one meant for it, and reaches the
 * upstream exactly once.
 */
import { Agent, request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type TestGateway, writeConfig } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let up: TestUpstream;
let gw: TestGateway;
const seenIds = new Map<string, number>();

function config(routeName: string) {
  return {
    upstreams: { main: { endpoints: [up.url] } },
    routes: [{ name: routeName, match: { path: '/r' }, upstream: 'main' }],
  };
}

beforeAll(async () => {
  let n = 0;
  up = await startUpstream((req, res) => {
    const id = new URL(req.url ?? '/', 'http://x').searchParams.get('id');
    if (id === null) return false;
    seenIds.set(id, (seenIds.get(id) ?? 0) + 1);
    // Deterministic pseudo-random delay and shape, so responses finish out of order.
    const k = n++;
    setTimeout(
      () => {
        res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream-id': id });
        if (k % 3 === 0) {
          res.write(`id=${id};`);
          setTimeout(() => res.end(`part2=${id}`), 2);
        } else res.end(`id=${id};part2=${id}`);
      },
      (k * 7919) % 13,
    );
    return true;
  });
  gw = await startGateway(config('gen-0'), { asFile: true });
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
});

function get(
  agent: Agent,
  id: string,
): Promise<{ status: number; body: string; requestId: string; upstreamId: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: gw.port,
        path: `/r?id=${id}`,
        agent,
        headers: { 'x-request-id': `req-${id}` },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body,
            requestId: String(res.headers['x-request-id']),
            upstreamId: String(res.headers['x-upstream-id']),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('under concurrency and a reload', () => {
  it('every request gets exactly its own response and reaches the upstream exactly once', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 24 });
    const clients = 24;
    const results: { id: string; status: number; body: string; requestId: string; upstreamId: string }[] = [];
    let stop = false;
    // Clients send until the reloader is done; it reloads five times, each renaming the route,
    // after every 160 answers (a reload loads and compiles off the request path, so it may take
    // longer than 160 answers: each generation gets 160 answers of its own before the next).
    const reloader = (async () => {
      for (let generation = 1; generation <= 6; generation++) {
        const target = results.length + 160;
        while (results.length < target) await new Promise((r) => setTimeout(r, 5));
        if (generation === 6) break;
        writeConfig(gw.configFile!, config(`gen-${generation}`));
        const result = await gw.gateway.reload('test');
        expect(result, JSON.stringify(result)).toMatchObject({ ok: true, changed: true });
      }
      stop = true;
    })();
    await Promise.all([
      reloader,
      ...Array.from({ length: clients }, async (_, c) => {
        for (let i = 0; !stop; i++) {
          const id = `${c}-${i}`;
          results.push({ id, ...(await get(agent, id)) });
        }
      }),
    ]);
    agent.destroy();
    expect(results.length).toBeGreaterThanOrEqual(6 * 160);
    for (const r of results) {
      expect(r.status, r.id).toBe(200);
      expect(r.body, r.id).toBe(`id=${r.id};part2=${r.id}`);
      expect(r.requestId, r.id).toBe(`req-${r.id}`);
      expect(r.upstreamId, r.id).toBe(r.id);
    }
    expect(seenIds.size).toBe(results.length);
    expect([...seenIds.values()].every((n) => n === 1)).toBe(true);
    // Every generation served: the reloads happened while requests were flowing.
    const routes = new Set(gw.logs.access().map((l) => l.route));
    expect(routes).toEqual(new Set(['gen-0', 'gen-1', 'gen-2', 'gen-3', 'gen-4', 'gen-5']));
    // About 10 s on an idle 2-core machine; each reload starts a child process, which a loaded
    // machine (the full suite beside other work) can slow several times over. The counts above are
    // exact whatever the time taken.
  }, 120_000);
});
