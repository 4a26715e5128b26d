/**
 * The admin /metrics endpoint streams a large scrape with the reader's backpressure: the whole
 * text arrives, as renderMetrics renders it, however slowly the scraper reads, and waiting for
 * the socket leaves no listeners behind.
 */
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderMetrics } from '../../src/telemetry/metrics.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const ROUTES = 800;
let up: TestUpstream;
let gw: TestGateway;

beforeAll(async () => {
  up = await startUpstream();
  gw = await startGateway({
    upstreams: { svc: { endpoints: [up.url] } },
    routes: Array.from({ length: ROUTES }, (_, i) => ({
      name: `r${i}`,
      match: { path: `/r${i}` },
      upstream: 'svc',
    })),
  });
  for (let i = 0; i < ROUTES; i++) expect((await fetch(`${gw.url}/r${i}`)).status).toBe(200);
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
});

/** GET /metrics reading one chunk of the answer per 2 ms: the gateway waits for the socket. */
function slowScrape(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        res.pause();
        setTimeout(() => res.resume(), 2);
      });
      res.on('end', () => resolve(Buffer.concat(chunks).toString()));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Without the process metrics, which change from one render to the next. */
const stable = (text: string): string =>
  text
    .split('\n')
    .filter((l) => !/^(# (HELP|TYPE) )?peregrine_(process|nodejs)_/.test(l))
    .join('\n');

describe('GET /metrics at 800 routes', () => {
  it('streams the whole text to slow scrapers, two at once, leaving no listeners behind', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => {
      warnings.push(w);
    };
    process.on('warning', onWarning);
    try {
      const [a, b] = await Promise.all([
        slowScrape(`${gw.adminUrl}/metrics`),
        slowScrape(`${gw.adminUrl}/metrics`),
      ]);
      const { body } = await renderMetrics(gw.gateway.telemetry.metrics, undefined);
      // More 64 KB chunks than an emitter takes listeners before it warns (10).
      expect(a.length).toBeGreaterThan(11 * 64 * 1024);
      expect(stable(a)).toBe(stable(body));
      expect(stable(b)).toBe(stable(body));
      expect(a).toContain(
        `peregrine_requests_total{listener="edge",route="r${ROUTES - 1}",method="GET",status="200"} 1`,
      );
      // Let a pending warning (emitted on the next tick) arrive.
      await new Promise((r) => setImmediate(r));
      expect(warnings.map((w) => w.name)).not.toContain('MaxListenersExceededWarning');
    } finally {
      process.off('warning', onWarning);
    }
  });
});
