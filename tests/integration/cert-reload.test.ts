/**
 * Certificate hot reload: files replaced atomically while new TLS connections keep arriving give
 * zero failed requests, new connections get the new certificate at once, existing ones keep
 * theirs; a bad, mismatched or expired set is rejected and counted while the old one keeps
 * serving; a client CA bundle reloads too; a reload asked for (SIGHUP) behaves the same, unwatched
 * files included.
 */
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CertFiles,
  createTestPki,
  type IssuedCert,
  removeCertFiles,
  replaceAtomically,
  type TestPki,
  writeCertFiles,
} from '../helpers/certs.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { h2Request, h2Session, httpsFetch, metricValue, scrape } from '../helpers/tls-client.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let pki: TestPki;
let up: TestUpstream;

beforeAll(async () => {
  pki = await createTestPki();
  up = await startUpstream();
});

afterAll(async () => {
  await up?.close();
  removeCertFiles();
});

interface CertsView {
  listeners: {
    server: { serial: string };
    reloads: { success: number; failure: number };
    lastError: { message: string; at: string } | null;
  }[];
}

async function certsView(gw: TestGateway): Promise<CertsView['listeners'][number]> {
  const body = (await (await fetch(`${gw.adminUrl}/v1/certs`)).json()) as CertsView;
  return body.listeners[0]!;
}

/** Poll /v1/certs until `done` holds (file watching is asynchronous); fails after 10 s. */
async function waitForCerts(
  gw: TestGateway,
  done: (v: CertsView['listeners'][number]) => boolean,
): Promise<CertsView['listeners'][number]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const view = await certsView(gw);
    if (done(view)) return view;
    if (Date.now() > deadline)
      throw new Error(`certificates never reached the expected state: ${JSON.stringify(view)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function install(files: CertFiles, cert: IssuedCert, key = cert.key): void {
  // Key first, then certificate, each by rename: what cert-manager-style tools do.
  replaceAtomically(files.key, key);
  replaceAtomically(files.cert, cert.cert);
}

async function startTlsGateway(files: CertFiles, extra: Record<string, unknown> = {}): Promise<TestGateway> {
  return startGateway({
    listeners: [
      { name: 'edge', address: '127.0.0.1:0', tls: { cert: files.cert, key: files.key, ...extra } },
    ],
    upstreams: { echo: { endpoints: [up.url] } },
    routes: [{ name: 'echo', upstream: 'echo' }],
  });
}

describe('certificate hot reload', () => {
  it('rotates twice under load: zero failed requests, new connections get the new certificate', async () => {
    const [second, third] = await Promise.all([pki.ca.server(), pki.ca.server()]);
    const files = writeCertFiles(pki.server, pki.ca.cert);
    const gw = await startTlsGateway(files);
    // An HTTP/2 connection opened before the rotations: it must be left alone.
    const early = await h2Session(gw.port, { ca: pki.ca.cert });
    try {
      interface Outcome {
        startedAt: number;
        serial: string | undefined;
        ok: boolean;
        error?: string;
      }
      const outcomes: Outcome[] = [];
      let stop = false;
      const worker = async (): Promise<void> => {
        while (!stop || outcomes.length < 300) {
          const startedAt = performance.now();
          try {
            const res = await httpsFetch(gw.port, '/load', { ca: pki.ca.cert });
            outcomes.push({ startedAt, serial: res.peer?.serialNumber, ok: res.status === 200 });
          } catch (err) {
            outcomes.push({ startedAt, serial: undefined, ok: false, error: String(err) });
          }
          await new Promise((r) => setTimeout(r, 5));
        }
      };
      const load = Promise.all(Array.from({ length: 10 }, worker));

      await new Promise((r) => setTimeout(r, 300));
      install(files, second);
      await waitForCerts(gw, (v) => v.server.serial === second.serial);
      const secondAt = performance.now();
      await new Promise((r) => setTimeout(r, 300));
      install(files, third);
      const view = await waitForCerts(gw, (v) => v.server.serial === third.serial);
      const thirdAt = performance.now();
      await new Promise((r) => setTimeout(r, 300));
      stop = true;
      await load;

      expect(outcomes.length).toBeGreaterThanOrEqual(300);
      expect(outcomes.filter((o) => !o.ok)).toEqual([]);
      const serials = new Set(outcomes.map((o) => o.serial));
      expect([...serials].every((s) => [pki.server.serial, second.serial, third.serial].includes(s!))).toBe(
        true,
      );
      expect(serials.has(pki.server.serial)).toBe(true);
      expect(serials.has(third.serial)).toBe(true);
      // Once a reload is visible, every connection that starts presents at least that certificate.
      for (const o of outcomes.filter((x) => x.startedAt > secondAt && x.startedAt < thirdAt))
        expect([second.serial, third.serial]).toContain(o.serial);
      for (const o of outcomes.filter((x) => x.startedAt > thirdAt)) expect(o.serial).toBe(third.serial);
      expect(view.reloads).toEqual({ success: 2, failure: 0 });
      expect(view.lastError).toBeNull();

      const text = await scrape(gw.adminUrl);
      expect(metricValue(text, 'peregrine_tls_certificate_reloads_total', { outcome: 'success' })).toBe(2);
      expect(
        metricValue(text, 'peregrine_tls_certificate_reloads_total', { outcome: 'failure' }),
      ).toBeUndefined();
      expect(metricValue(text, 'peregrine_tls_handshake_failures_total')).toBeUndefined();
      // The expiry gauge follows the certificate now served (old series replaced, not kept).
      expect(
        metricValue(text, 'peregrine_tls_certificate_expiry_timestamp_seconds', { role: 'server' }),
      ).toBe(third.x509.validToDate.getTime() / 1000);

      // The connection from before the rotations still works and still has its certificate.
      expect((early.socket as TLSSocket).getPeerX509Certificate()?.serialNumber).toBe(pki.server.serial);
      expect((await h2Request(early, { ':method': 'GET', ':path': '/early' })).status).toBe(200);
    } finally {
      early.close();
      await gw.close();
    }
  });

  it('rejects a bad, mismatched or expired set, keeps serving the old one, and shows the error', async () => {
    const files = writeCertFiles(pki.server, pki.ca.cert);
    const gw = await startTlsGateway(files);
    try {
      const served = async () => (await httpsFetch(gw.port, '/', { ca: pki.ca.cert })).peer?.serialNumber;
      expect(await served()).toBe(pki.server.serial);

      replaceAtomically(
        files.cert,
        '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n',
      );
      let view = await waitForCerts(gw, (v) => v.reloads.failure === 1);
      expect(view.lastError?.message).toMatch(/certificate .*tls\.crt/);
      expect(view.server.serial).toBe(pki.server.serial);
      expect(await served()).toBe(pki.server.serial);

      const other = await pki.ca.server();
      install(files, other, pki.payments.key);
      view = await waitForCerts(gw, (v) => v.reloads.failure === 2);
      expect(view.lastError?.message).toMatch(/does not match certificate/);
      expect(await served()).toBe(pki.server.serial);

      install(files, pki.expired);
      view = await waitForCerts(gw, (v) => v.reloads.failure === 3);
      expect(view.lastError?.message).toMatch(/expired at/);
      expect(await served()).toBe(pki.server.serial);

      const text = await scrape(gw.adminUrl);
      expect(metricValue(text, 'peregrine_tls_certificate_reloads_total', { outcome: 'failure' })).toBe(3);
      const logged = gw.logs
        .lines()
        .filter((l) => l.msg === 'TLS certificate reload rejected; the previous certificate keeps serving');
      expect(logged).toHaveLength(3);

      // A good set afterwards is taken, and clears the error.
      install(files, other);
      view = await waitForCerts(gw, (v) => v.reloads.success === 1);
      expect(view.lastError).toBeNull();
      expect(await served()).toBe(other.serial);
    } finally {
      await gw.close();
    }
  });

  it('reloads the client CA bundle', async () => {
    const files = writeCertFiles(pki.server, pki.ca.cert);
    const gw = await startTlsGateway(files, { clientAuth: 'required', clientCa: files.ca });
    try {
      const payments = { ca: pki.ca.cert, cert: pki.payments.cert, key: pki.payments.key };
      const foreign = { ca: pki.ca.cert, cert: pki.foreign.cert, key: pki.foreign.key };
      expect((await httpsFetch(gw.port, '/', payments)).status).toBe(200);
      await expect(httpsFetch(gw.port, '/', foreign)).rejects.toThrow();
      replaceAtomically(files.ca, pki.ca.cert + pki.otherCa.cert);
      await waitForCerts(gw, (v) => v.reloads.success === 1);
      expect((await httpsFetch(gw.port, '/', foreign)).status).toBe(200);
      expect((await httpsFetch(gw.port, '/', payments)).status).toBe(200);
    } finally {
      await gw.close();
    }
  });
});

describe('certificate reload on demand (SIGHUP)', () => {
  it('reloads files replaced on disk when asked, unwatched too, and rejects a bad set the same way', async () => {
    const files = writeCertFiles(pki.server, pki.ca.cert);
    const gw = await startTlsGateway(files, { watch: false });
    try {
      const listener = gw.gateway.listeners[0]!;
      const served = async () => (await httpsFetch(gw.port, '/', { ca: pki.ca.cert })).peer?.serialNumber;
      const next = await pki.ca.server();
      install(files, next);
      expect(await served()).toBe(pki.server.serial);

      expect(listener.reloadCertificates?.('signal')).toBe(true);
      expect(await served()).toBe(next.serial);

      // A certificate installed with another certificate's key: rejected, the current one stays.
      install(files, pki.server, next.key);
      expect(listener.reloadCertificates?.('signal')).toBe(false);
      expect(await served()).toBe(next.serial);

      const view = (await (await fetch(`${gw.adminUrl}/v1/certs`)).json()) as {
        listeners: { watching: boolean; reloads: unknown; lastError: { message: string } | null }[];
      };
      expect(view.listeners[0]).toMatchObject({ watching: false, reloads: { success: 1, failure: 1 } });
      expect(view.listeners[0]!.lastError?.message).toMatch(/does not match certificate/);
      const text = await scrape(gw.adminUrl);
      expect(metricValue(text, 'peregrine_tls_certificate_reloads_total', { outcome: 'success' })).toBe(1);
      expect(metricValue(text, 'peregrine_tls_certificate_reloads_total', { outcome: 'failure' })).toBe(1);
      const logged = gw.logs.lines().filter((l) => l.listener === 'edge' && l.trigger === 'signal');
      expect(logged.map((l) => [l.level, l.msg])).toEqual([
        ['info', 'TLS certificate reloaded'],
        ['error', 'TLS certificate reload rejected; the previous certificate keeps serving'],
      ]);
    } finally {
      await gw.close();
    }
  });
});
