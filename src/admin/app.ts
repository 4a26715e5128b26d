/**
 * The admin API (express, its own port, loopback by default): metrics, health, read-only views
 * of what the data plane is running, and the status page (`/ui`) that shows those views. Never on
 * the request path.
 */
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { formatIssue } from '../config/loader.ts';
import { redact } from '../config/redact.ts';
import type { ConfigStore } from '../control/config-store.ts';
import { describeRateLimits } from '../dataplane/filters/rate-limit/describe.ts';
import { runInSlices } from '../slices.ts';
import type { RedisHealth } from '../stores/redis.ts';
import { type GatewayMetrics, metricsContentType, writeMetrics } from '../telemetry/metrics.ts';
import type { RecentDecisions } from '../telemetry/recent-decisions.ts';
import type { ListenerCertificateStatus } from '../tls/listener-certificates.ts';
import type { UpstreamTlsStatus } from '../tls/upstream-tls.ts';
import type { AdminAuthMode } from './auth.ts';
import { routeStatsJson, routeStatsSteps } from './route-stats.ts';
import { mountUi } from './ui.ts';

/** A listener as `/v1/status` shows it. */
export interface ListenerStatus {
  readonly name: string;
  /** Bound address (`host:port`, port resolved). */
  readonly address: string;
  readonly tls: boolean;
}

/** A view built in slices gives the event loop a turn about this often. */
const VIEW_SLICE_MS = 2;

/** Most instances one `/v1/registry/instances` answer lists (`total` says how many there are). */
export const MAX_LISTED_INSTANCES = 1000;

export interface AdminSource {
  readonly store: ConfigStore;
  readonly metrics: GatewayMetrics;
  readonly version: string;
  /** When this process started serving (for uptime). */
  readonly startedAt: Date;
  /** Listeners bound and config loaded, and not draining. */
  isReady(): boolean;
  isDraining(): boolean;
  /** Trigger a reload of the config file (same path as SIGHUP). */
  reload(trigger: string): Promise<unknown>;
  /** Data-plane listeners and where they are bound. */
  listeners?(): ListenerStatus[];
  /** TLS listeners' certificates (served and trusted), reload counts and last reload error. */
  certificates?(): ListenerCertificateStatus[];
  /** Upstreams' client certificates and CA bundles (those with a `tls` section). */
  upstreamCertificates?(): UpstreamTlsStatus[];
  /** The service registry: store health and services (absent without a registry). */
  registry?(): unknown;
  /** Registered instances with their leases, of one service or all (absent without a registry). */
  registryInstances?(service: string | undefined, limit: number): { total: number; instances: unknown[] };
  /** The registry store's health, for readiness details (absent without a registry). */
  registryStore?(): unknown;
  /**
   * The health of the Redis connection rate limits count on (absent without a `redis` section):
   * their own once a Redis policy made it, the shared one's before.
   */
  redis?(): RedisHealth;
  /** The last responses the gateway made itself (absent: an empty list). */
  readonly decisions?: RecentDecisions;
  /** `telemetry.tracing.uiUrl`: a trace's page in a trace backend, `{traceId}` to fill in. */
  readonly traceUrl?: string | undefined;
  /** What protects this admin API. */
  readonly auth?: AdminAuthMode;
  /** Runs before every route: refuses requests without a credential (admin auth). */
  readonly guard?: ((req: Request, res: Response, next: NextFunction) => void) | undefined;
  /** Mode sidecar: the registration, the application's readiness, the registry followed. */
  sidecar?(): unknown;
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
  if (src.guard) app.use(src.guard);
  mountUi(app);

  app.get('/metrics', async function metricsHandler(req: Request, res: Response) {
    // Streamed as it renders: at 10,000 routes the text is 20 MB, never held whole.
    const accept = req.get('accept');
    res.status(200).set('content-type', metricsContentType(accept));
    try {
      await writeMetrics(src.metrics, accept, function writeChunk(chunk: string) {
        if (res.destroyed || res.write(chunk)) return;
        // Both listeners go whichever fires: a scrape waits hundreds of times at 10,000 routes.
        return new Promise<void>((resolve) => {
          const go = (): void => {
            res.off('drain', go);
            res.off('close', go);
            resolve();
          };
          res.on('drain', go);
          res.on('close', go);
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
      sidecar: src.sidecar?.() ?? null,
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
        listeners: r.config.listeners ?? null,
        upstream: r.upstream,
        rewrite: r.config.rewrite ?? null,
        preserveHost: r.preserveHost,
        // The policy chain in the order it runs: name and kind of each.
        policies: snapshot.plans.get(r.name)?.policies ?? [],
      })),
    });
  });

  app.get('/v1/ratelimits', function rateLimits(_req: Request, res: Response) {
    const snapshot = src.store.current;
    sendView(res, {
      version: snapshot.version,
      redis: src.redis?.() ?? null,
      policies: describeRateLimits(snapshot),
    });
  });

  app.get('/v1/certs', function certs(_req: Request, res: Response) {
    sendView(res, { listeners: src.certificates?.() ?? [], upstreams: src.upstreamCertificates?.() ?? [] });
  });

  app.get('/v1/status', function status(_req: Request, res: Response) {
    const store = src.store;
    const failure = store.lastFailure;
    sendView(res, {
      version: src.version,
      startedAt: src.startedAt.toISOString(),
      uptimeSeconds: Math.round((Date.now() - src.startedAt.getTime()) / 100) / 10,
      ready: src.isReady(),
      draining: src.isDraining(),
      config: {
        generation: store.current.version,
        file: store.file ?? null,
        loadedAt: store.lastSuccessAt,
        lastReload:
          failure === undefined
            ? { ok: true, at: store.lastSuccessAt }
            : {
                ok: false,
                at: failure.at,
                trigger: failure.trigger,
                issues: failure.issues.map((i) => ({ ...i, text: formatIssue(i) })),
              },
      },
      listeners: src.listeners?.() ?? [],
      admin: { auth: src.auth ?? null },
      // What this admin API answers: a client (the status page) asks only for what is there.
      api: apiPaths(app),
    });
  });

  if (src.registry) {
    const registry = src.registry;
    app.get('/v1/registry', function registryView(_req: Request, res: Response) {
      sendView(res, registry());
    });
  }
  if (src.registryInstances) {
    const instances = src.registryInstances;
    app.get('/v1/registry/instances', function registryInstances(req: Request, res: Response) {
      const service = typeof req.query.service === 'string' ? req.query.service : undefined;
      const { total, instances: list } = instances(service, MAX_LISTED_INSTANCES);
      sendView(res, { total, truncated: list.length < total, instances: list });
    });
  }

  app.get('/v1/stats/routes', async function stats(_req: Request, res: Response) {
    // In slices: at 10,000 routes the whole answer is 40-80 ms of work (route-stats.ts).
    const view = await runInSlices(routeStatsSteps(src.metrics), VIEW_SLICE_MS);
    res.type('json').send(await runInSlices(routeStatsJson(view), VIEW_SLICE_MS));
  });

  app.get('/v1/decisions/recent', function decisions(req: Request, res: Response) {
    const kept = src.decisions;
    const limit = Number(req.query.limit);
    sendView(res, {
      capacity: kept?.capacity ?? 0,
      total: kept?.total ?? 0,
      traceUrl: src.traceUrl ?? null,
      decisions: kept?.recent(Number.isInteger(limit) && limit > 0 ? limit : undefined) ?? [],
    });
  });

  app.get('/v1/sidecar', function sidecar(_req: Request, res: Response) {
    if (!src.sidecar) {
      res.status(404).type('application/problem+json').json({ title: 'Not a sidecar', status: 404 });
      return;
    }
    sendView(res, src.sidecar());
  });

  app.get('/v1/upstreams', function upstreams(_req: Request, res: Response) {
    const snapshot = src.store.current;
    sendView(res, {
      version: snapshot.version,
      upstreams: [...snapshot.clusters.values()].map((c) => ({
        ...c.describe(),
        discovery: src.store.discovery.status(c.name) ?? null,
        timeouts: c.config.timeouts,
        pools: Object.fromEntries(c.endpoints.map((e) => [e.id, poolStats(e.openedPool?.stats ?? NO_POOL)])),
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

/** The GET paths of `app`, as registered (the static page's own excluded). */
function apiPaths(app: Express): string[] {
  const stack = (app as unknown as { router: { stack: { route?: { path: unknown; methods: object } }[] } })
    .router.stack;
  const paths: string[] = [];
  for (const layer of stack) {
    const route = layer.route;
    if (route === undefined || !('get' in route.methods) || typeof route.path !== 'string') continue;
    if (route.path === '/' || route.path.startsWith('/ui')) continue;
    paths.push(route.path);
  }
  return paths;
}

/** The stats of an endpoint whose pool was never made (it has never been used). */
const NO_POOL = { connected: 0, free: 0, pending: 0, queued: 0, running: 0, size: 0 } as const;

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
