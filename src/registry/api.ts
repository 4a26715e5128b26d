/**
 * The registration API (served by RegistryServer on a listener of its own):
 *
 *   PUT    /v1/services/{service}/instances/{id}            register or renew (idempotent)
 *   POST   /v1/services/{service}/instances/{id}/heartbeat  renew; 404 for an unknown lease
 *   POST   /v1/services/{service}/instances/{id}/drain      draining: no new requests
 *   DELETE /v1/services/{service}/instances/{id}            deregister
 *   GET    /v1/services                                     services and instance counts
 *   GET    /v1/services/{service}                           a service's instances and leases
 *   GET    /v1/services/{service}/instances/{id}            one instance
 *   GET    /v1/watch[?service=name]                         server-sent events of changes
 *
 * Each request is authenticated (credentials.ts), rate-bounded per credential, and changes are
 * allowed only for the services the credential names. Failures are problem+json with a stable
 * code; refusals are counted by reason. docs/registry.md is the reference.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Span } from '@opentelemetry/api';
import { plainAddress } from '../dataplane/forward/trusted-proxies.ts';
import { type ErrorCode, GatewayError, toProblem } from '../errors.ts';
import { requestIdOf } from '../request-id.ts';
import { protocolVersionOf } from '../telemetry/http-attributes.ts';
import type { RegistryDenialReason } from '../telemetry/metrics.ts';
import type { Telemetry } from '../telemetry/telemetry.ts';
import { endServerSpan, SPAN_ATTR, serverSpanName } from '../telemetry/tracing.ts';
import { peerIdentityOf } from '../tls/peer-identity.ts';
import type { AddressPolicy } from './address-policy.ts';
import type { Credential, Credentials } from './credentials.ts';
import { isoTime } from './iso-time.ts';
import type { RateLimiter } from './rate-limit.ts';
import type { ParsedRegistration } from './registration.ts';
import { INSTANCE_ID_RE, SERVICE_NAME_RE } from './schema.ts';
import {
  ALL_SERVICES,
  type Instance,
  type InstanceChange,
  RegistryLimitError,
  type RegistryStore,
  RegistryUnavailableError,
} from './store.ts';

/** Paths whose route is remembered (a fleet's instances each renew on a path of their own). */
const ROUTE_CACHE_SIZE = 4096;
/** Largest request body accepted (a registration with the largest metadata fits well within it). */
const MAX_BODY_BYTES = 128 * 1024;
/** Services one watch stream may name (a sidecar names the services its application calls). */
const MAX_WATCHED_SERVICES = 1000;
/** A comment line on every watch stream this often, so proxies and clients see it is alive. */
const WATCH_KEEPALIVE_MS = 15_000;
/** A watch client that lets this much pile up unread is cut off. */
const WATCH_MAX_BUFFER = 1024 * 1024;

export interface RegistryApiDeps {
  readonly store: RegistryStore;
  readonly credentials: Credentials;
  readonly addressPolicy: AddressPolicy;
  readonly parse: (service: string, id: string, body: unknown) => ParsedRegistration;
  readonly rateLimiter: RateLimiter;
  /** This gateway's name, recorded as `registeredVia`. */
  readonly gatewayId: string;
  readonly telemetry: Telemetry;
  readonly maxWatchStreams: number;
  /** The response header naming the cause of a problem response. */
  readonly reasonHeader: string;
}

/** A failure with the denial reason it is counted under (if it is a refusal). */
class ApiError extends GatewayError {
  readonly denial: RegistryDenialReason | undefined;
  readonly extra: Record<string, unknown> | undefined;
  constructor(
    code: ErrorCode,
    detail: string,
    denial?: RegistryDenialReason,
    options?: { headers?: Record<string, string>; extra?: Record<string, unknown> },
  ) {
    super(code, detail, options);
    this.denial = denial;
    this.extra = options?.extra;
  }
}

type Route =
  | { kind: 'services' }
  | { kind: 'service'; service: string }
  | { kind: 'instance'; service: string; id: string }
  | { kind: 'heartbeat' | 'drain'; service: string; id: string }
  | { kind: 'watch' };

const ALLOWED: Record<Route['kind'], readonly string[]> = {
  services: ['GET'],
  service: ['GET'],
  instance: ['GET', 'PUT', 'DELETE'],
  heartbeat: ['POST'],
  drain: ['POST'],
  watch: ['GET'],
};

/**
 * `Prefer: return=minimal` (RFC 7240) on a heartbeat: the client needs no body, so the renewal
 * answers 204 and skips writing the instance out (what Peregrine's client asks for).
 */
const RETURN_MINIMAL = /(?:^|,)\s*return\s*=\s*"?minimal"?\s*(?:[;,]|$)/i;

/** The path of a request target; `new URL` only for what it would normalise (dot segments, `\`, `//`). */
function pathOf(target: string): string {
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  if (path.includes('/.') || path.includes('\\') || path.startsWith('//'))
    return new URL(target, 'http://registry').pathname;
  return path;
}

const TEMPLATES: Record<Route['kind'], string> = {
  services: '/v1/services',
  service: '/v1/services/{service}',
  instance: '/v1/services/{service}/instances/{id}',
  heartbeat: '/v1/services/{service}/instances/{id}/heartbeat',
  drain: '/v1/services/{service}/instances/{id}/drain',
  watch: '/v1/watch',
};

function badName(what: 'service' | 'id', value: string): ApiError {
  const rule =
    what === 'service'
      ? 'service names are lower-case letters, digits, . _ - (at most 63, starting and ending with a letter or digit)'
      : 'instance ids are letters, digits, . _ : - (at most 128, starting and ending with a letter or digit)';
  return new ApiError('INVALID_REGISTRATION', `invalid ${what} ${JSON.stringify(value)}: ${rule}`, 'invalid');
}

/** The route of a path, or undefined; names are checked here so handlers get valid ones. */
function routeOf(path: string): Route | undefined {
  if (path === '/v1/services') return { kind: 'services' };
  if (path === '/v1/watch') return { kind: 'watch' };
  if (!path.startsWith('/v1/services/')) return undefined;
  const parts = path.slice('/v1/services/'.length).split('/');
  const [service, instances, id, action] = parts;
  if (service === undefined || parts.length > 4) return undefined;
  if (!SERVICE_NAME_RE.test(service)) throw badName('service', service);
  if (parts.length === 1) return { kind: 'service', service };
  if (instances !== 'instances' || id === undefined) return undefined;
  if (!INSTANCE_ID_RE.test(id)) throw badName('id', id);
  if (parts.length === 3) return { kind: 'instance', service, id };
  if (action === 'heartbeat' || action === 'drain') return { kind: action, service, id };
  return undefined;
}

/** The JSON form of an instance: times as ISO 8601. */
export function instanceJson(i: Instance): Record<string, unknown> {
  return {
    service: i.service,
    id: i.id,
    address: i.address,
    port: i.port,
    protocol: i.protocol,
    zone: i.zone,
    version: i.version,
    weight: i.weight,
    metadata: i.metadata,
    state: i.state,
    ttlMs: i.ttlMs,
    expiresAt: isoTime(i.expiresAt),
    lastHeartbeat: isoTime(i.lastHeartbeat),
    registeredAt: isoTime(i.registeredAt),
    registeredVia: i.registeredVia,
  };
}

/** Equal strings, compared in time that depends on their length only (a credential is compared). */
function sameSecret(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

function sendJson(res: ServerResponse, status: number, body: unknown, requestId: string): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    'x-request-id': requestId,
  });
  res.end(text);
}

export class RegistryApi {
  readonly #deps: RegistryApiDeps;
  readonly #watches = new Set<ServerResponse>();
  /** Valid paths' routes (immutable), so a renewal's path is not split and checked again each time. */
  readonly #routes = new Map<string, Route>();
  /** Per connection: the Authorization header it last authenticated with, and its credential. */
  readonly #lastCredential = new WeakMap<Socket, { authorization: string; credential: Credential }>();

  constructor(deps: RegistryApiDeps) {
    this.#deps = deps;
  }

  /** The request handler (bound: hand it to a server as it is). */
  handle = (req: IncomingMessage, res: ServerResponse): void => {
    const { tracing } = this.#deps.telemetry;
    const method = req.method ?? 'GET';
    // As on the data plane: the client's tame x-request-id or a new one, in the answer, the
    // problem body, the span and the log lines of this request.
    const requestId = requestIdOf(req);
    const target = req.url ?? '/';
    const query = target.indexOf('?');
    // Literal keys (SPAN_ATTR's values): computed ones make V8 build the object slowly, per request.
    const span = tracing.startServerSpan(method, req.headers, {
      'url.path': query === -1 ? target : target.slice(0, query),
      'url.scheme': (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http',
      'client.address': plainAddress(req.socket.remoteAddress),
      'network.protocol.version': protocolVersionOf(req),
    });
    if (span.isRecording()) span.setAttribute('peregrine.request_id', requestId);
    this.#serve(req, res, span, requestId).catch((err: unknown) => {
      this.#fail(
        res,
        span,
        err instanceof GatewayError ? err : new GatewayError('INTERNAL', undefined, { cause: err }),
        requestId,
      );
    });
  };

  async #serve(req: IncomingMessage, res: ServerResponse, span: Span, requestId: string): Promise<void> {
    const path = pathOf(req.url ?? '/');
    let route: Route | undefined;
    try {
      route = this.#route(path);
    } catch (err) {
      // A malformed name in the path: still authenticate first, so anonymous callers learn nothing.
      this.#authenticate(req);
      throw err;
    }
    if (route === undefined) throw new GatewayError('ROUTE_NOT_FOUND', `no registry API at ${path}`);
    const method = req.method ?? 'GET';
    // Names and attributes only for a span that is recorded (an unsampled one drops them).
    if (span.isRecording()) {
      span.updateName(serverSpanName(method, TEMPLATES[route.kind]));
      span.setAttribute(SPAN_ATTR.HTTP_ROUTE, TEMPLATES[route.kind]);
      if ('service' in route) span.setAttribute('peregrine.registry.service', route.service);
      if ('id' in route) span.setAttribute('peregrine.registry.instance', route.id);
    }
    const allowed = ALLOWED[route.kind];
    if (!allowed.includes(method))
      throw new ApiError('METHOD_NOT_ALLOWED', `${method} is not allowed here`, undefined, {
        headers: { allow: allowed.join(', ') },
      });

    const credential = this.#authenticate(req);
    const wait = this.#deps.rateLimiter.take(credential.principal);
    if (wait > 0)
      throw new ApiError(
        'REGISTRY_RATE_LIMITED',
        `too many requests for ${credential.principal}`,
        'rate_limited',
        {
          headers: { 'retry-after': String(Math.max(1, Math.ceil(wait / 1000))) },
        },
      );

    if (method === 'GET') {
      this.#read(req, res, route, span, requestId);
      return;
    }
    const { service, id } = route as { service: string; id: string };
    if (!credential.mayRegister(service))
      throw new ApiError(
        'FORBIDDEN',
        `${credential.principal} may not register service ${service}`,
        'service_not_allowed',
      );
    const via = this.#deps.gatewayId;
    const store = this.#deps.store;
    const metrics = this.#deps.telemetry.metrics.registryMetrics;
    const logger = this.#deps.telemetry.logger;
    let instance: Instance | undefined;
    let status = 200;
    let outcome: string;
    switch (route.kind) {
      case 'instance': {
        if (method === 'DELETE') {
          instance = await this.#store(() => store.deregister(service, id));
          if (instance === undefined) throw notFound(service, id);
          metrics.recordDeregistration(service);
          logger.info(
            { service, id, principal: credential.principal, requestId },
            'registry instance deregistered',
          );
          span.setAttribute('peregrine.registry.outcome', 'deregistered');
          res.writeHead(204, { 'cache-control': 'no-store', 'x-request-id': requestId }).end();
          endServerSpan(span, 204, undefined);
          return;
        }
        const result = await this.#register(req, service, id, credential, via, requestId);
        instance = result.instance;
        outcome = result.outcome;
        status = outcome === 'created' ? 201 : 200;
        break;
      }
      case 'heartbeat': {
        // No closure for #store on the one route a fleet calls 200 times a second.
        try {
          instance = await store.renew(service, id, via);
        } catch (err) {
          throw storeFailure(err);
        }
        if (instance === undefined) throw notFound(service, id);
        metrics.recordRenewal(service);
        outcome = 'renewed';
        break;
      }
      default: {
        instance = await this.#store(() => store.drain(service, id, via));
        if (instance === undefined) throw notFound(service, id);
        metrics.recordDrain(service);
        logger.info(
          { service, id, principal: credential.principal, requestId },
          'registry instance draining',
        );
        outcome = 'drained';
      }
    }
    span.setAttribute('peregrine.registry.outcome', outcome);
    if (outcome === 'renewed' && prefersMinimal(req)) {
      res
        .writeHead(204, {
          'cache-control': 'no-store',
          'preference-applied': 'return=minimal',
          'x-request-id': requestId,
        })
        .end();
      endServerSpan(span, 204, undefined);
      return;
    }
    sendJson(
      res,
      status,
      {
        outcome,
        instance: instanceJson(instance),
        // When to renew: a third of the lease leaves two more tries before it expires.
        heartbeatIntervalMs: Math.floor(instance.ttlMs / 3),
      },
      requestId,
    );
    endServerSpan(span, status, undefined);
  }

  async #register(
    req: IncomingMessage,
    service: string,
    id: string,
    credential: Credential,
    via: string,
    requestId: string,
  ): Promise<{ outcome: string; instance: Instance }> {
    const body = await readJson(req);
    const parsed = this.#deps.parse(service, id, body);
    if (!parsed.ok)
      throw new ApiError(
        'INVALID_REGISTRATION',
        parsed.problems.map((p) => `${p.field}: ${p.message}`).join('; '),
        'invalid',
        { extra: { errors: parsed.problems } },
      );
    const requested = parsed.address ?? plainAddress(req.socket.remoteAddress);
    const verdict = this.#deps.addressPolicy(requested);
    if (!verdict.ok) throw new ApiError('ADDRESS_NOT_ALLOWED', verdict.detail, 'address_not_allowed');
    const registration = parsed.build(verdict.address);
    let result: Awaited<ReturnType<RegistryStore['register']>>;
    try {
      result = await this.#store(() => this.#deps.store.register(registration, via));
    } catch (err) {
      if (err instanceof RegistryLimitError)
        throw new ApiError(
          err.reason === 'too_many_instances' ? 'TOO_MANY_INSTANCES' : 'TOO_MANY_SERVICES',
          err.message,
          err.reason,
        );
      throw err;
    }
    const metrics = this.#deps.telemetry.metrics.registryMetrics;
    if (result.outcome === 'renewed') metrics.recordRenewal(service);
    else {
      metrics.recordRegistration(service, result.outcome);
      if (registration.state === 'draining') metrics.recordDrain(service);
      this.#deps.telemetry.logger.info(
        {
          service,
          id,
          address: registration.spec.address,
          port: registration.spec.port,
          state: registration.state,
          outcome: result.outcome,
          principal: credential.principal,
          requestId,
        },
        'registry instance registered',
      );
    }
    return result;
  }

  /** The route of a path (remembered while the cache has room); throws for a malformed name. */
  #route(path: string): Route | undefined {
    const known = this.#routes.get(path);
    if (known !== undefined) return known;
    const route = routeOf(path);
    if (route !== undefined) {
      if (this.#routes.size >= ROUTE_CACHE_SIZE) this.#routes.clear();
      this.#routes.set(path, route);
    }
    return route;
  }

  /** Run a store write; an unreachable store is 503 (the client retries with backoff). */
  async #store<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      throw storeFailure(err);
    }
  }

  #authenticate(req: IncomingMessage): Credential {
    const authorization = req.headers.authorization;
    // A keep-alive client sends the same header with every renewal: compared with what this
    // connection last authenticated with, it is not hashed and looked up again. The connection's
    // peer identity cannot change, so the header alone decides.
    const last = this.#lastCredential.get(req.socket);
    if (last !== undefined && authorization !== undefined && sameSecret(last.authorization, authorization))
      return last.credential;
    const auth = this.#deps.credentials.authenticate(peerIdentityOf(req.socket), authorization);
    if (auth.ok) {
      if (authorization !== undefined)
        this.#lastCredential.set(req.socket, { authorization, credential: auth.credential });
      return auth.credential;
    }
    if (auth.reason === 'no_credential')
      throw new ApiError('AUTH_REQUIRED', auth.detail, 'no_credential', {
        headers: { 'www-authenticate': 'Bearer realm="peregrine-registry"' },
      });
    throw new ApiError('INVALID_CREDENTIAL', auth.detail, 'bad_credential', {
      headers: { 'www-authenticate': 'Bearer realm="peregrine-registry", error="invalid_token"' },
    });
  }

  #read(req: IncomingMessage, res: ServerResponse, route: Route, span: Span, requestId: string): void {
    const store = this.#deps.store;
    switch (route.kind) {
      case 'services':
        sendJson(
          res,
          200,
          { gatewayId: this.#deps.gatewayId, store: store.health(), services: store.services() },
          requestId,
        );
        break;
      case 'service':
        sendJson(
          res,
          200,
          { service: route.service, instances: store.list(route.service).map(instanceJson) },
          requestId,
        );
        break;
      case 'instance': {
        const instance = store.get(route.service, route.id);
        if (instance === undefined) throw notFound(route.service, route.id);
        sendJson(res, 200, { instance: instanceJson(instance) }, requestId);
        break;
      }
      default:
        this.#watch(
          req,
          res,
          new URL(req.url ?? '/', 'http://registry').searchParams.getAll('service'),
          requestId,
        );
        endServerSpan(span, 200, undefined);
        return;
    }
    endServerSpan(span, 200, undefined);
  }

  /**
   * Server-sent events: `snapshot` (the instances now), then one `change` per change; of every
   * service, or of the services named (`?service=a&service=b`).
   */
  #watch(req: IncomingMessage, res: ServerResponse, services: string[], requestId: string): void {
    for (const service of services) if (!SERVICE_NAME_RE.test(service)) throw badName('service', service);
    if (services.length > MAX_WATCHED_SERVICES)
      throw new ApiError(
        'INVALID_REGISTRATION',
        `a watch names at most ${MAX_WATCHED_SERVICES} services`,
        'invalid',
      );
    if (this.#watches.size >= this.#deps.maxWatchStreams)
      throw new ApiError(
        'REGISTRY_RATE_LIMITED',
        `at most ${this.#deps.maxWatchStreams} watch streams are open at once`,
        'rate_limited',
        { headers: { 'retry-after': '5' } },
      );
    const store = this.#deps.store;
    const metrics = this.#deps.telemetry.metrics.registryMetrics;
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
      'x-request-id': requestId,
    });
    req.socket.setTimeout(0);
    const named = [...new Set(services)];
    const instances = (named.length === 0 ? store.services().map((s) => s.service) : named).flatMap((s) =>
      store.list(s),
    );
    res.write(`event: snapshot\ndata: ${JSON.stringify({ instances: instances.map(instanceJson) })}\n\n`);
    const send = (change: InstanceChange): void => {
      if (res.writableLength > WATCH_MAX_BUFFER) {
        res.destroy();
        return;
      }
      const data = { type: change.type, cause: change.cause, instance: instanceJson(change.instance) };
      res.write(`event: change\ndata: ${JSON.stringify(data)}\n\n`);
    };
    const unwatches = (named.length === 0 ? [ALL_SERVICES] : named).map((s) => store.watch(s, send));
    const unwatch = (): void => {
      for (const u of unwatches) u();
    };
    const keepalive = setInterval(() => res.write(': keepalive\n\n'), WATCH_KEEPALIVE_MS);
    keepalive.unref();
    this.#watches.add(res);
    metrics.watchStreams.inc();
    res.once('close', () => {
      unwatch();
      clearInterval(keepalive);
      this.#watches.delete(res);
      metrics.watchStreams.dec();
    });
  }

  /** End every watch stream (the server is closing). */
  closeWatches(): void {
    for (const res of this.#watches) res.end();
  }

  #fail(res: ServerResponse, span: Span, err: GatewayError, requestId: string): void {
    const { telemetry, reasonHeader } = this.#deps;
    const denial = err instanceof ApiError ? err.denial : undefined;
    if (denial !== undefined) {
      telemetry.metrics.registryMetrics.recordDenial(denial);
      telemetry.logger.debug(
        { reason: denial, code: err.code, detail: err.message, requestId },
        'registry request refused',
      );
    } else if (err.code === 'INTERNAL') {
      telemetry.logger.error({ err: err.cause ?? err, code: err.code, requestId }, 'registry request failed');
    } else if (err.status >= 500) {
      // A store outage: logged once by the Redis connection and counted per operation, not per request.
      telemetry.logger.debug({ code: err.code, detail: err.message, requestId }, 'registry request failed');
    }
    endServerSpan(span, err.status, err.code);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const { traceId } = telemetry.tracing.traceIds(span);
    const problem = {
      ...toProblem(err, { traceId, requestId }),
      ...(err instanceof ApiError ? err.extra : {}),
    };
    const text = JSON.stringify(problem);
    res.writeHead(err.status, {
      ...err.headers,
      'content-type': 'application/problem+json',
      'content-length': Buffer.byteLength(text),
      'cache-control': 'no-store',
      'x-request-id': requestId,
      ...(reasonHeader ? { [reasonHeader]: err.code } : {}),
    });
    res.end(text);
  }
}

/** The client asked for no body back (Prefer: return=minimal). */
function prefersMinimal(req: IncomingMessage): boolean {
  const prefer = req.headers.prefer;
  // What Peregrine's client sends, compared before the general form is parsed.
  return prefer === 'return=minimal' || (typeof prefer === 'string' && RETURN_MINIMAL.test(prefer));
}

/** What a failed store write answers: 503 when the store is unreachable (the client retries). */
function storeFailure(err: unknown): unknown {
  return err instanceof RegistryUnavailableError
    ? new GatewayError('REGISTRY_UNAVAILABLE', err.message, { headers: { 'retry-after': '1' } })
    : err;
}

function notFound(service: string, id: string): GatewayError {
  return new GatewayError('INSTANCE_NOT_FOUND', `no lease for ${service}/${id}: register it (PUT) first`);
}

/** The request body as JSON; 413 past MAX_BODY_BYTES, 400 when it does not parse. */
async function readJson(req: IncomingMessage): Promise<unknown> {
  // The rest of an oversized body is not read: the connection closes after the answer.
  const tooLarge = () =>
    new ApiError('PAYLOAD_TOO_LARGE', `request body over ${MAX_BODY_BYTES} bytes`, 'invalid', {
      headers: { connection: 'close' },
    });
  if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw tooLarge();
    chunks.push(chunk);
  }
  if (size === 0) throw new ApiError('INVALID_REGISTRATION', 'a JSON body is required', 'invalid');
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new ApiError('INVALID_REGISTRATION', 'the body is not valid JSON', 'invalid');
  }
}
