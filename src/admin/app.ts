/**
 * The admin API (express, its own port, loopback by default): metrics, health, and read-only views
 * of what the data plane is running. Never on the request path.
 */
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { redact } from '../config/redact.ts';
import type { ConfigStore } from '../control/config-store.ts';
import { type GatewayMetrics, metricsContentType, writeMetrics } from '../telemetry/metrics.ts';
import type { ListenerCertificateStatus } from '../tls/listener-certificates.ts';
import type { UpstreamTlsStatus } from '../tls/upstream-tls.ts';

export interface AdminSource {
  readonly store: ConfigStore;
  readonly metrics: GatewayMetrics;
  readonly version: string;
  /** Listeners bound and config loaded, and not draining. */
  isReady(): boolean;
  isDraining(): boolean;
  /** Trigger a reload of the config file (same path as SIGHUP). */
  reload(trigger: string): Promise<unknown>;
  /** TLS listeners' certificates (served and trusted), reload counts and last reload error. */
  certificates?(): ListenerCertificateStatus[];
  /** Upstreams' client certificates and CA bundles (those with a `tls` section). */
  upstreamCertificates?(): UpstreamTlsStatus[];
  /** The service registry: store health and services (absent without a registry). */
  registry?(): unknown;
  /** The registry store's health, for readiness details (absent without a registry). */
  registryStore?(): unknown;
}

/**
 * Every view of configuration or state goes out through here: one redaction (src/config/redact.ts)
 * for all of them, so no view can show a secret another view hides.
 */
function sendView(res: Response, body: unknown, status = 200): void {
  res.status(status).json(redact(body));
}

export function createAdminApp(src: AdminSource): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  app.get('/metrics', async function metricsHandler(req: Request, res: Response) {
    // Streamed as it renders: at 10,000 routes the text is 20 MB, never held whole.
    const accept = req.get('accept');
    res.status(200).set('content-type', metricsContentType(accept));
    try {
      await writeMetrics(src.metrics, accept, function writeChunk(chunk: string) {
        if (res.destroyed || res.write(chunk)) return;
        return new Promise<void>((resolve) => {
          res.once('drain', resolve);
          res.once('close', resolve);
        });
      });
    } catch (err) {
      if (!res.headersSent) throw err;
      // Cut, so a partial scrape never looks complete.
      res.destroy(err as Error);
      return;
    }
    res.end();
  });

  app.get('/healthz', function healthz(_req: Request, res: Response) {
    res.json({ status: 'ok', version: src.version });
  });

  app.get('/readyz', function readyz(_req: Request, res: Response) {
    const ready = src.isReady();
    const auth = src.store.current.auth.providersReady();
    const discovery = src.store.discovery;
    res.status(ready ? 200 : 503).json({
      ready,
      draining: src.isDraining(),
      authProvidersWithoutKeys: auth.notReady,
      // Not answered yet: readiness waits for these. Failing: shown, serving their last known endpoints.
      upstreamSourcesPending: discovery.pending(),
      upstreamSourcesFailing: discovery.failing(),
      // Registry upstreams follow this store; out of sync, they keep their last known instances.
      registryStore: src.registryStore?.() ?? null,
    });
  });

  app.get('/v1/auth', function auth(_req: Request, res: Response) {
    sendView(res, { providers: src.store.current.auth.describe() });
  });

  app.get('/v1/config', function config(_req: Request, res: Response) {
    sendView(res, {
      version: src.store.current.version,
      loadedAt: src.store.lastSuccessAt,
      file: src.store.file ?? null,
      config: src.store.effective,
    });
  });

  app.get('/v1/config/errors', function configErrors(_req: Request, res: Response) {
    const failure = src.store.lastFailure;
    sendView(res, { lastReloadFailed: failure !== undefined, failure: failure ?? null });
  });

  app.post('/v1/config/reload', async function reload(_req: Request, res: Response) {
    const result = await src.reload('admin');
    sendView(res, result, (result as { ok?: boolean }).ok ? 200 : 422);
  });

  app.get('/v1/routes', function routes(_req: Request, res: Response) {
    const snapshot = src.store.current;
    sendView(res, {
      version: snapshot.version,
      routes: snapshot.routes.routes.map((r, i) => ({
        order: i,
        name: r.name,
        priority: r.priority,
        match: r.config.match,
        upstream: r.upstream,
        rewrite: r.config.rewrite ?? null,
        preserveHost: r.preserveHost,
      })),
    });
  });

  app.get('/v1/certs', function certs(_req: Request, res: Response) {
    sendView(res, { listeners: src.certificates?.() ?? [], upstreams: src.upstreamCertificates?.() ?? [] });
  });

  app.get('/v1/registry', function registry(_req: Request, res: Response) {
    if (!src.registry) {
      res.status(404).type('application/problem+json').json({ title: 'No registry configured', status: 404 });
      return;
    }
    sendView(res, src.registry());
  });

  app.get('/v1/upstreams', function upstreams(_req: Request, res: Response) {
    const snapshot = src.store.current;
    sendView(res, {
      version: snapshot.version,
      upstreams: [...snapshot.clusters.values()].map((c) => ({
        ...c.describe(),
        discovery: src.store.discovery.status(c.name) ?? null,
        timeouts: c.config.timeouts,
        pools: Object.fromEntries(c.endpoints.map((e) => [e.id, poolStats(e.pool.stats)])),
      })),
    });
  });

  app.use(function notFound(_req: Request, res: Response) {
    res.status(404).type('application/problem+json').json({ title: 'Not found', status: 404 });
  });

  app.use(function adminError(err: unknown, _req: Request, res: Response, _next: NextFunction) {
    res
      .status(500)
      .type('application/problem+json')
      .json({
        title: 'Admin API error',
        status: 500,
        detail: err instanceof Error ? err.message : String(err),
      });
  });
  return app;
}

function poolStats(stats: {
  connected: number;
  free: number;
  pending: number;
  queued: number;
  running: number;
  size: number;
}) {
  return {
    connected: stats.connected,
    free: stats.free,
    pending: stats.pending,
    queued: stats.queued,
    running: stats.running,
    size: stats.size,
  };
}
