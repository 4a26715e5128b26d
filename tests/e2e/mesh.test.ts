/**
 * One trace across the mesh, with real processes:
 *
 *   client → edge gateway → sidecar(out, gateway) → sidecar(in, b) → app b
 *                                                     app b → sidecar(out, b) → sidecar(in, c) → app c
 *
 * The edge gateway runs the registry (registration API over mTLS); every sidecar is
 * `bin/peregrine.js run` in mode sidecar, registers with its SPIFFE certificate and follows the
 * registry; the applications are examples/mesh/app.ts instrumented with @opentelemetry/sdk-node
 * and its HTTP auto-instrumentation, calling through their sidecar as an HTTP proxy. Every process
 * exports spans to one OTLP receiver: the trace must be one chain of parent and child across all
 * thirteen spans, each sidecar's inbound SERVER span naming the caller it verified. Every hop's
 * metrics are on its own /metrics. A caller not on c's allow-list is refused with 403 and the
 * refusal is in its trace; a sidecar whose certificate another CA issued is refused.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { ConfigInput } from '../../src/config/schema.ts';
import { removeCertFiles } from '../helpers/certs.ts';
import { testConfig } from '../helpers/gateway.ts';
import { type GatewayProcess, startGatewayProcess } from '../helpers/gateway-process.ts';
import {
  callThrough,
  createMeshPki,
  type MeshPki,
  meshId,
  registryGatewayConfig,
  sidecarConfig,
} from '../helpers/mesh.ts';
import { type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from '../helpers/otlp-receiver.ts';
import { freePort } from '../helpers/ports.ts';
import { metricValue } from '../helpers/tls-client.ts';
import { until } from '../helpers/until.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ROGUE_TOKEN = 'mesh-e2e-rogue-registry-token-0123';
/** Spans leave every process within a fraction of a second. */
const FAST_EXPORT = { OTEL_BSP_SCHEDULE_DELAY: '100' };

let dir: string;
let pki: MeshPki;
let otlp: OtlpReceiver;
const processes: { stop(): Promise<void> }[] = [];
let edge: GatewayProcess;
let sidecars: Record<'gateway' | 'b' | 'c' | 'rogue', GatewayProcess>;

function writeYaml(name: string, config: Partial<ConfigInput>): string {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, stringify(testConfig(config)));
  return file;
}

async function startPeregrine(
  name: string,
  config: Partial<ConfigInput>,
  env: Record<string, string> = {},
): Promise<GatewayProcess> {
  const p = await startGatewayProcess(writeYaml(name, config), { ...FAST_EXPORT, ...env });
  processes.push(p);
  return p;
}

/** A mesh demo application (examples/mesh/app.ts) with the OpenTelemetry Node SDK loaded first. */
async function startApp(service: string, outboundPort: number, next?: string): Promise<number> {
  const child: ChildProcess = spawn(
    process.execPath,
    ['--import', './examples/mesh/instrument.ts', 'examples/mesh/app.ts'],
    {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        ...FAST_EXPORT,
        PORT: '0',
        SERVICE: service,
        ...(next === undefined ? {} : { NEXT: next }),
        OTEL_SERVICE_NAME: service,
        OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
        // Calls to other services go through the sidecar; loopback (the collector) stays direct.
        NODE_USE_ENV_PROXY: '1',
        HTTP_PROXY: `http://127.0.0.1:${outboundPort}`,
        NO_PROXY: '127.0.0.1,localhost',
      },
    },
  );
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  processes.push({
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  });
  return new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const line = out.split('\n').find((l) => l.includes('"listening"'));
      if (line !== undefined) resolve((JSON.parse(line) as { port: number }).port);
    });
    void exited.then(() => reject(new Error(`app ${service} exited: ${stderr}`)));
  });
}

async function scrape(p: GatewayProcess): Promise<string> {
  const res = await request(`http://127.0.0.1:${p.adminPort}/metrics`);
  return res.body.text();
}

async function get(path: string, headers: Record<string, string> = {}) {
  const res = await request(`http://127.0.0.1:${edge.port}${path}`, {
    headers,
    signal: AbortSignal.timeout(15_000),
  });
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
}

function traceparent(): { header: string; traceId: string; spanId: string } {
  const hex = (n: number) =>
    [...crypto.getRandomValues(new Uint8Array(n))].map((b) => b.toString(16).padStart(2, '0')).join('');
  const traceId = hex(16);
  const spanId = hex(8);
  return { header: `00-${traceId}-${spanId}-01`, traceId, spanId };
}

const serviceOf = (s: ReceivedSpan) => String(s.resource['service.name']);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'peregrine-mesh-e2e-'));
  pki = await createMeshPki(['gateway', 'b', 'c']);
  otlp = await startOtlpReceiver();
  const ports = {
    edge: await freePort(),
    registry: await freePort(),
    gatewayOut: await freePort(),
    bIn: await freePort(),
    bOut: await freePort(),
    cIn: await freePort(),
    cOut: await freePort(),
    rogueOut: await freePort(),
  };
  const tracing = { tracing: { exporter: 'otlp' as const, endpoint: otlp.url, sampleRatio: 1 } };
  const registry = registryGatewayConfig(pki, {
    tokens: [{ name: 'rogue', env: 'ROGUE_REGISTRY_TOKEN', services: ['rogue'] }],
  });
  edge = await startPeregrine(
    'edge',
    {
      listeners: [{ name: 'edge', address: `127.0.0.1:${ports.edge}` }],
      telemetry: { serviceName: 'edge', ...tracing },
      registry: {
        ...registry.registry!,
        listener: { ...registry.registry!.listener!, address: `127.0.0.1:${ports.registry}` },
      },
      // The edge gateway's own sidecar carries its requests into the mesh.
      upstreams: {
        mesh: { endpoints: [`http://127.0.0.1:${ports.gatewayOut}`], retries: { maxAttempts: 1 } },
      },
      routes: [
        { name: 'b', match: { path: '/b' }, upstream: 'mesh', rewrite: { stripPrefix: '/b', host: 'b' } },
        {
          name: 'direct-c',
          match: { path: '/direct-c' },
          upstream: 'mesh',
          rewrite: { stripPrefix: '/direct-c', host: 'c' },
        },
      ],
    },
    { ROGUE_REGISTRY_TOKEN: ROGUE_TOKEN },
  );
  const registryUrl = `https://127.0.0.1:${ports.registry}`;
  const sidecar = (o: Parameters<typeof sidecarConfig>[0]): Partial<ConfigInput> => {
    const c = sidecarConfig({ ...o, adminAddress: '127.0.0.1:0' });
    return { ...c, telemetry: tracing };
  };
  const [bApp, cApp] = await Promise.all([startApp('b', ports.bOut, 'c'), startApp('c', ports.cOut)]);
  const rogueFiles = await pki.issue('rogue', pki.otherCa);
  const started = await Promise.all([
    startPeregrine(
      'sidecar-gateway',
      sidecar({
        service: 'gateway',
        files: pki.files.gateway!,
        registry: registryUrl,
        services: ['b', 'c'],
        outboundAddress: `127.0.0.1:${ports.gatewayOut}`,
      }),
    ),
    startPeregrine(
      'sidecar-b',
      sidecar({
        service: 'b',
        files: pki.files.b!,
        registry: registryUrl,
        app: `http://127.0.0.1:${bApp}`,
        allow: [meshId('gateway')],
        services: ['c'],
        inboundAddress: `127.0.0.1:${ports.bIn}`,
        outboundAddress: `127.0.0.1:${ports.bOut}`,
      }),
    ),
    startPeregrine(
      'sidecar-c',
      sidecar({
        service: 'c',
        files: pki.files.c!,
        registry: registryUrl,
        app: `http://127.0.0.1:${cApp}`,
        allow: [meshId('b')],
        inboundAddress: `127.0.0.1:${ports.cIn}`,
        outboundAddress: `127.0.0.1:${ports.cOut}`,
      }),
    ),
    startPeregrine(
      'sidecar-rogue',
      sidecar({
        service: 'rogue',
        files: rogueFiles,
        registry: registryUrl,
        services: ['c'],
        tokenEnv: 'ROGUE_REGISTRY_TOKEN',
        outboundAddress: `127.0.0.1:${ports.rogueOut}`,
      }),
      { ROGUE_REGISTRY_TOKEN: ROGUE_TOKEN },
    ),
  ]);
  sidecars = { gateway: started[0]!, b: started[1]!, c: started[2]!, rogue: started[3]! };
  // Registered (after their applications answered /ready) and seen by their callers.
  await until('the chain answers', async () => (await get('/b/work')).status === 200, 30_000);
}, 90_000);

afterAll(async () => {
  for (const p of processes.reverse()) await p.stop();
  await otlp?.close();
  removeCertFiles();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

describe('one request across the mesh', () => {
  it('is one trace whose spans form the chain edge → a → b → app b → b → c → app c', async () => {
    const tp = traceparent();
    const res = await get('/b/work', { traceparent: tp.header });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toMatchObject({
      service: 'b',
      next: { status: 200, body: { service: 'c' } },
    });

    const spansOf = () => otlp.spans().filter((s) => s.traceId === tp.traceId);
    await until('all 13 spans', () => spansOf().length >= 13, 15_000);
    const spans = spansOf();
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    // From app c's SERVER span up to the client's span, each span's parent is the one before it.
    const leaf = spans.find((s) => serviceOf(s) === 'c' && s.kind === 'server');
    expect(leaf, 'app c SERVER span').toBeDefined();
    const chain: ReceivedSpan[] = [];
    for (let s: ReceivedSpan | undefined = leaf; s !== undefined; s = byId.get(s.parentSpanId ?? ''))
      chain.push(s);
    expect(chain.map((s) => `${serviceOf(s)} ${s.kind}`).reverse()).toEqual([
      'edge server',
      'edge client',
      'gateway-sidecar server',
      'gateway-sidecar client',
      'b-sidecar server',
      'b-sidecar client',
      'b server',
      'b client',
      'b-sidecar server',
      'b-sidecar client',
      'c-sidecar server',
      'c-sidecar client',
      'c server',
    ]);
    // The root of the gateway's part continues the client's trace.
    expect(chain.at(-1)!.parentSpanId).toBe(tp.spanId);
    expect(spans).toHaveLength(13);

    // Sidecars' SERVER spans: the direction, both ends, and at each inbound hop the caller's verified identity.
    const servers = chain.filter((s) => s.kind === 'server' && serviceOf(s).endsWith('-sidecar')).reverse();
    expect(
      servers.map((s) => [
        serviceOf(s),
        s.attributes['peregrine.mesh.direction'],
        s.attributes['peregrine.mesh.source'],
        s.attributes['peregrine.mesh.destination'],
        s.attributes['peregrine.client.identity'] ?? null,
      ]),
    ).toEqual([
      ['gateway-sidecar', 'outbound', 'gateway', 'b', null],
      ['b-sidecar', 'inbound', 'gateway', 'b', meshId('gateway')],
      ['b-sidecar', 'outbound', 'b', 'c', null],
      ['c-sidecar', 'inbound', 'b', 'c', meshId('b')],
    ]);
  }, 30_000);

  it("puts every hop's metrics on its own /metrics", async () => {
    const mesh = (text: string, direction: string, source: string, destination: string) =>
      metricValue(text, 'peregrine_mesh_requests_total', { direction, source, destination, status: '200' }) ??
      0;
    const [e, a, b, c] = await Promise.all([
      scrape(edge),
      scrape(sidecars.gateway),
      scrape(sidecars.b),
      scrape(sidecars.c),
    ]);
    expect(metricValue(e, 'peregrine_requests_total', { route: 'b', status: '200' })).toBeGreaterThanOrEqual(
      2,
    );
    expect(mesh(a, 'outbound', 'gateway', 'b')).toBeGreaterThanOrEqual(2);
    expect(mesh(b, 'inbound', 'gateway', 'b')).toBeGreaterThanOrEqual(2);
    expect(mesh(b, 'outbound', 'b', 'c')).toBeGreaterThanOrEqual(2);
    expect(mesh(c, 'inbound', 'b', 'c')).toBeGreaterThanOrEqual(2);
    // mTLS between sidecars: handshakes toward each destination, with its identity verified.
    expect(
      metricValue(b, 'peregrine_upstream_tls_handshakes_total', { upstream: 'outbound.c' }),
    ).toBeGreaterThan(0);
    expect(metricValue(c, 'peregrine_tls_handshakes_total', { listener: 'inbound' })).toBeGreaterThan(0);
  });
});

describe('refusals', () => {
  it("refuses a caller not on c's allow-list with 403, and the refusal is in its trace", async () => {
    const tp = traceparent();
    const res = await get('/direct-c/work', { traceparent: tp.header });
    expect(res.status).toBe(403);
    expect(res.headers['x-peregrine-reason']).toBe('IDENTITY_DENIED');
    await until(
      "c's refusal span",
      () =>
        otlp
          .spans()
          .some((s) => s.traceId === tp.traceId && serviceOf(s) === 'c-sidecar' && s.kind === 'server'),
      15_000,
    );
    const refusal = otlp
      .spans()
      .find((s) => s.traceId === tp.traceId && serviceOf(s) === 'c-sidecar' && s.kind === 'server')!;
    expect(refusal.attributes['http.response.status_code']).toBe(403);
    expect(refusal.attributes['peregrine.client.identity']).toBe(meshId('gateway'));
    expect(refusal.attributes['peregrine.mesh.source']).toBe('gateway');
    expect(String(refusal.attributes['peregrine.decisions'])).toContain('IDENTITY_DENIED');
    // Nothing of it reached c's application: no span of service c in that trace.
    expect(otlp.spans().filter((s) => s.traceId === tp.traceId && serviceOf(s) === 'c')).toEqual([]);
    const c = await scrape(sidecars.c);
    expect(
      metricValue(c, 'peregrine_mesh_requests_total', {
        direction: 'inbound',
        source: 'gateway',
        status: '403',
      }),
    ).toBeGreaterThanOrEqual(1);
  }, 30_000);

  it('refuses a sidecar whose certificate another CA issued', async () => {
    const before = metricValue(
      await scrape(sidecars.c),
      'peregrine_tls_client_cert_verification_failures_total',
      {
        listener: 'inbound',
      },
    );
    // It knows where c is (it reads the registry with a token), and c refuses its certificate.
    let res = await callThrough(sidecars.rogue.listeners.outbound!, 'c', '/work');
    await until(
      'rogue sees c',
      async () => {
        res = await callThrough(sidecars.rogue.listeners.outbound!, 'c', '/work');
        return res.status !== 503;
      },
      15_000,
    );
    expect(res.status).toBe(502);
    const after = metricValue(
      await scrape(sidecars.c),
      'peregrine_tls_client_cert_verification_failures_total',
      {
        listener: 'inbound',
      },
    );
    expect(after).toBeGreaterThan(before ?? 0);
  }, 30_000);
});
