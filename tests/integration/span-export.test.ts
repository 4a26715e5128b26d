/**
 * A collector that cannot take the spans is visible: peregrine_tracing_spans_total counts them as
 * failed, the export latency is recorded, and the log says so (once, not per batch). Against real
 * sockets: a port that refuses connections, and a collector that answers 500 and then recovers.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let up: TestUpstream;
const opened: { close(): Promise<void> }[] = [];

beforeAll(async () => {
  // Export every 50 ms, and give up on a collector after 300 ms (no retry fits in that).
  process.env.OTEL_BSP_SCHEDULE_DELAY = '50';
  process.env.OTEL_EXPORTER_OTLP_TIMEOUT = '300';
  up = await startUpstream();
});

afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.close();
});

afterAll(async () => {
  await up?.close();
});

async function gatewayExportingTo(endpoint: string): Promise<TestGateway> {
  const gw = await startGateway({
    telemetry: { tracing: { exporter: 'otlp', endpoint, sampleRatio: 1 } },
    upstreams: { main: { endpoints: [up.url] } },
    routes: [{ name: 'main', match: { path: '/' }, upstream: 'main' }],
  });
  opened.push(gw);
  return gw;
}

async function requests(gw: TestGateway, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const res = await fetch(`${gw.url}/echo`);
    expect(res.status).toBe(200);
    await res.arrayBuffer();
  }
}

/** The value of one sample of the admin /metrics page (0 when absent). */
async function sample(gw: TestGateway, series: string): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A port nothing listens on: bound, then closed. */
async function refusingPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** An OTLP endpoint answering with `status()` to every export. */
async function collector(status: () => number): Promise<{ url: string; exports: () => number }> {
  let exports = 0;
  const server: Server = createServer((req, res) => {
    req.resume();
    req.once('end', () => {
      exports++;
      res.writeHead(status(), { 'content-type': 'application/json' }).end('{}');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  opened.push({
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, exports: () => exports };
}

const FAILED = 'peregrine_tracing_spans_total{outcome="failed"}';
const EXPORTED = 'peregrine_tracing_spans_total{outcome="exported"}';

describe('span export failures', () => {
  it('to a port that refuses connections: counted, timed and logged once', async () => {
    const gw = await gatewayExportingTo(`http://127.0.0.1:${await refusingPort()}`);
    await requests(gw, 3);
    // One SERVER and one CLIENT span per request.
    await until('6 failed spans', async () => (await sample(gw, FAILED)) >= 6);
    expect(await sample(gw, EXPORTED)).toBe(0);
    expect(
      await sample(gw, 'peregrine_tracing_export_duration_seconds_count{outcome="failed"}'),
    ).toBeGreaterThan(0);

    await requests(gw, 3);
    await until('12 failed spans', async () => (await sample(gw, FAILED)) >= 12);
    const warnings = gw.logs.lines().filter((l) => String(l.msg).startsWith('span export failed'));
    // Rate-limited: the second round of failures comes within the minute, so still one line.
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ level: 'warn', err: { code: 'ECONNREFUSED' } });
  });

  it('to a collector answering 500: counted and logged, and the recovery too', async () => {
    let status = 500;
    const otlp = await collector(() => status);
    const gw = await gatewayExportingTo(otlp.url);
    await requests(gw, 2);
    await until('4 failed spans', async () => (await sample(gw, FAILED)) >= 4);
    expect(await sample(gw, EXPORTED)).toBe(0);
    expect(gw.logs.lines().find((l) => String(l.msg).startsWith('span export failed'))).toMatchObject({
      level: 'warn',
      err: { code: 500 },
    });

    status = 200;
    await requests(gw, 2);
    await until('4 exported spans', async () => (await sample(gw, EXPORTED)) >= 4);
    expect(gw.logs.lines().some((l) => l.msg === 'span export works again')).toBe(true);
    expect(otlp.exports()).toBeGreaterThanOrEqual(2);
  });
});
