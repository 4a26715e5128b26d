/**
 * The admin port beyond loopback: a bearer token (read from a file, compared as a digest, never
 * logged) or a verified client certificate (admin.tls with clientAuth) for every view; the probes
 * and the status page's own files open; every refusal counted. And without any credential: open,
 * as on loopback.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runHealthcheck } from '../../src/cli/healthcheck.ts';
import {
  type CertFiles,
  createTestPki,
  removeCertFiles,
  type TestPki,
  writeCertFiles,
} from '../helpers/certs.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { type ClientTls, httpsFetch, metricValue } from '../helpers/tls-client.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const TOKEN = 'adm1n-t0ken-0123456789abcdef';
const VIEWS = ['/v1/status', '/v1/config', '/v1/routes', '/v1/upstreams', '/v1/decisions/recent', '/metrics'];

let pki: TestPki;
let files: CertFiles;
let up: TestUpstream;
let tokenGw: TestGateway;
let mtlsGw: TestGateway;
let openGw: TestGateway;
let closedGw: TestGateway;
let tokenFile: string;

beforeAll(async () => {
  pki = await createTestPki();
  files = writeCertFiles(pki.server, pki.ca.cert);
  up = await startUpstream();
  tokenFile = join(mkdtempSync(join(tmpdir(), 'peregrine-admin-')), 'token');
  writeFileSync(tokenFile, `${TOKEN}\n`);
  const base = {
    upstreams: { main: { endpoints: [up.url] } },
    routes: [{ name: 'all', match: { path: '/' }, upstream: 'main' }],
  };
  tokenGw = await startGateway({ ...base, admin: { auth: { token: { file: tokenFile } } } });
  mtlsGw = await startGateway({
    ...base,
    admin: {
      tls: { cert: files.cert, key: files.key, clientAuth: 'optional', clientCa: files.ca },
      auth: { token: { file: tokenFile } },
    },
  });
  openGw = await startGateway(base);
  closedGw = await startGateway({
    ...base,
    admin: { auth: { token: { file: tokenFile }, openProbes: false } },
  });
});

afterAll(async () => {
  await Promise.all([tokenGw?.close(), mtlsGw?.close(), openGw?.close(), closedGw?.close()]);
  await up?.close();
  removeCertFiles();
});

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

describe('admin bearer token', () => {
  it.each(VIEWS)('%s refuses a request without the token (401, Bearer challenge)', async (path) => {
    const res = await fetch(`${tokenGw.adminUrl}${path}`);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="peregrine-admin"');
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(await res.text()).not.toContain(up.url);
  });

  it('refuses a wrong token (invalid_token), and a token of another length, the same way', async () => {
    for (const wrong of [`${TOKEN.slice(0, -1)}x`, 'short', `${TOKEN}${TOKEN}`]) {
      const res = await fetch(`${tokenGw.adminUrl}/v1/status`, { headers: bearer(wrong) });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toContain('error="invalid_token"');
    }
    const basic = await fetch(`${tokenGw.adminUrl}/v1/status`, {
      headers: { authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}` },
    });
    expect(basic.status).toBe(401);
  });

  it.each(VIEWS)('%s answers with the token', async (path) => {
    const res = await fetch(`${tokenGw.adminUrl}${path}`, { headers: bearer(TOKEN) });
    expect(res.status).toBe(200);
  });

  it('leaves the probes and the page files open', async () => {
    for (const path of ['/healthz', '/readyz', '/ui', '/ui/app.js', '/ui/app.css']) {
      expect((await fetch(`${tokenGw.adminUrl}${path}`)).status, path).toBe(200);
    }
  });

  it('says what protects it in /v1/status, counts refusals by reason, and never logs the token', async () => {
    const status = (await (
      await fetch(`${tokenGw.adminUrl}/v1/status`, { headers: bearer(TOKEN) })
    ).json()) as { admin: { auth: unknown } };
    expect(status.admin.auth).toEqual({ bearer: true, clientCertificates: 'none', openProbes: true });
    const metrics = await (await fetch(`${tokenGw.adminUrl}/metrics`, { headers: bearer(TOKEN) })).text();
    expect(metricValue(metrics, 'peregrine_admin_auth_failures_total', { reason: 'no_credential' })).toBe(
      VIEWS.length,
    );
    expect(metricValue(metrics, 'peregrine_admin_auth_failures_total', { reason: 'bad_credential' })).toBe(4);
    expect(tokenGw.logs.text()).not.toContain(TOKEN);
    expect(tokenGw.logs.text()).not.toContain(TOKEN.slice(0, 12));
  });
});

describe('admin over TLS with client certificates', () => {
  const client = (cert?: { cert: string; key: string }): ClientTls => ({
    ca: pki.ca.cert,
    ...(cert ? { cert: cert.cert, key: cert.key } : {}),
  });

  it('admits a verified client certificate without a token', async () => {
    const port = mtlsGw.gateway.adminAddress.port;
    const res = await httpsFetch(port, '/v1/upstreams', client(pki.payments));
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body).upstreams[0].name).toBe('main');
  });

  it('admits the token without a certificate, refuses neither, and keeps the probes open', async () => {
    const port = mtlsGw.gateway.adminAddress.port;
    expect((await httpsFetch(port, '/v1/routes', client())).status).toBe(401);
    expect((await httpsFetch(port, '/v1/routes', client(), { headers: bearer(TOKEN) })).status).toBe(200);
    expect((await httpsFetch(port, '/healthz', client())).status).toBe(200);
  });

  it('refuses a certificate from another CA at the handshake, never as anonymous', async () => {
    const port = mtlsGw.gateway.adminAddress.port;
    await expect(
      httpsFetch(port, '/healthz', client(pki.foreign), { headers: bearer(TOKEN) }),
    ).rejects.toThrow();
  });

  it('shows its certificate in /v1/certs beside the data plane', async () => {
    const port = mtlsGw.gateway.adminAddress.port;
    const res = await httpsFetch(port, '/v1/certs', client(pki.payments));
    const listeners = JSON.parse(res.body).listeners as { listener: string; clientAuth: string }[];
    expect(listeners).toContainEqual(expect.objectContaining({ listener: 'admin', clientAuth: 'optional' }));
  });
});

describe('admin without a credential configured', () => {
  it('answers every view, and /v1/status says so', async () => {
    for (const path of VIEWS) expect((await fetch(`${openGw.adminUrl}${path}`)).status, path).toBe(200);
    const status = (await (await fetch(`${openGw.adminUrl}/v1/status`)).json()) as {
      admin: { auth: unknown };
    };
    expect(status.admin.auth).toEqual({ bearer: false, clientCertificates: 'none', openProbes: true });
  });
});

describe('probes closed (openProbes: false)', () => {
  it('refuse /healthz and /readyz without the token', async () => {
    for (const path of ['/healthz', '/readyz']) {
      expect((await fetch(`${closedGw.adminUrl}${path}`)).status, path).toBe(401);
      expect((await fetch(`${closedGw.adminUrl}${path}`, { headers: bearer(TOKEN) })).status, path).toBe(200);
    }
  });
});

describe('peregrine healthcheck', () => {
  /** A config file naming `gw`'s admin address and `admin` settings; the rest as small as valid. */
  function configFor(gw: TestGateway, admin: Record<string, unknown>): string {
    const file = join(mkdtempSync(join(tmpdir(), 'peregrine-health-')), 'gateway.yaml');
    const address = `127.0.0.1:${gw.gateway.adminAddress.port}`;
    writeFileSync(
      file,
      stringify({ listeners: [{ name: 'edge', address: '127.0.0.1:0' }], admin: { ...admin, address } }),
    );
    return file;
  }
  const out = { stdout: () => undefined, stderr: (s: string) => errors.push(s) };
  const errors: string[] = [];

  it('reaches an admin port with TLS over https', async () => {
    const file = configFor(mtlsGw, {
      tls: { cert: files.cert, key: files.key, clientAuth: 'optional', clientCa: files.ca },
      auth: { token: { file: tokenFile } },
    });
    expect(await runHealthcheck(file, out)).toBe(0);
  });

  it('sends the admin token when the probes are closed, and fails without it', async () => {
    const withToken = configFor(closedGw, { auth: { token: { file: tokenFile }, openProbes: false } });
    expect(await runHealthcheck(withToken, out)).toBe(0);
    errors.length = 0;
    const without = configFor(closedGw, {});
    expect(await runHealthcheck(without, out)).toBe(1);
    expect(errors).toEqual([expect.stringMatching(/answered 401$/)]);
  });
});
