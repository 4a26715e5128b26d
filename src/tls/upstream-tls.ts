/**
 * The client side of TLS toward one upstream: the secure context its connections use (the CA
 * bundle the upstream's chain must end at, the client certificate presented for mTLS), how the
 * upstream's certificate is verified (its host name, or its SPIFFE ID), and the counters of its
 * handshakes. The files follow rotation (rotation.ts): a new set is checked as a whole, then new
 * connections use it while established keep-alive connections carry on; pools are never dropped.
 *
 * One UpstreamTls per upstream and `tls` section, shared by the upstream's endpoints through an
 * UpstreamTlsSet and released by the last of them, so a reload that keeps an upstream's TLS
 * settings keeps its files loaded and watched once, whatever else it changes.
 */
import type { PeerCertificate, SecureContext, SecureContextOptions } from 'node:tls';
import pino, { type Logger } from 'pino';
import type { UpstreamCertificateExpiry, UpstreamTlsMetrics } from '../telemetry/metrics.ts';
import {
  buildContext,
  type CertificateInfo,
  CertificateLoadError,
  checkCaBundle,
  checkPair,
  describeCertificate,
  joinProblems,
} from './pem.ts';
import { CertificateRotation, type RotationStatus } from './rotation.ts';
import type { UpstreamTlsConfig } from './schema.ts';
import { type ExpectedIdentity, expectedIdentity } from './spiffe.ts';
import { svidServerCheck } from './svid.ts';

interface Material {
  readonly context: SecureContext;
  readonly client: CertificateInfo | undefined;
  readonly clientNotAfter: Date | undefined;
  readonly ca: readonly CertificateInfo[];
  readonly caNotAfter: readonly Date[];
}

/** What `GET /v1/certs` shows for one upstream with a `tls` section. */
export interface UpstreamTlsStatus extends RotationStatus {
  readonly upstream: string;
  readonly files: { readonly ca: string | null; readonly cert: string | null; readonly key: string | null };
  readonly serverName: string | null;
  /** The SPIFFE IDs expected (a pattern with `{service}` filled in), or null: host name verification. */
  readonly expectedIdentities: readonly string[] | null;
  readonly client: CertificateInfo | null;
  readonly ca: readonly CertificateInfo[];
}

function checkMaterial(
  cfg: UpstreamTlsConfig,
  now: number,
  problems: CertificateLoadError[],
): Material | undefined {
  const pair =
    cfg.cert !== undefined && cfg.key !== undefined
      ? checkPair(cfg.cert, cfg.key, { cert: 'cert', key: 'key' }, now, problems)
      : undefined;
  const ca = cfg.ca === undefined ? undefined : checkCaBundle(cfg.ca, 'ca', problems);
  if (problems.length > 0) return undefined;
  const options: SecureContextOptions = { minVersion: cfg.minVersion, maxVersion: cfg.maxVersion };
  // A private CA replaces Node's bundle of public CAs: never both.
  if (ca !== undefined) options.ca = ca.pem;
  if (pair !== undefined) {
    options.cert = pair.certPem;
    options.key = pair.keyPem;
  }
  const files = [cfg.ca, cfg.cert, cfg.key].filter((f) => f !== undefined).join(', ');
  const context = buildContext(options, files, undefined, problems);
  if (context === undefined) return undefined;
  return {
    context,
    client: pair === undefined ? undefined : describeCertificate(pair.leaf),
    clientNotAfter: pair?.leaf.validToDate,
    ca: ca?.certificates.map(describeCertificate) ?? [],
    caNotAfter: ca?.certificates.map((c) => c.validToDate) ?? [],
  };
}

/**
 * Every problem with an upstream's `tls` files, found by the same checks as at load and on reload
 * (readable, PEM, key matches certificate, not expired, accepted by OpenSSL). For `peregrine validate`.
 */
export function checkUpstreamTlsFiles(
  cfg: UpstreamTlsConfig,
  now: number = Date.now(),
): CertificateLoadError[] {
  const problems: CertificateLoadError[] = [];
  checkMaterial(cfg, now, problems);
  return problems;
}

/** An upstream's TLS files are not a usable set; `keyPath` names the config key of the first problem. */
export class UpstreamTlsLoadError extends CertificateLoadError {
  readonly keyPath: string;

  constructor(upstream: string, cause: CertificateLoadError) {
    super(`upstream ${upstream}: ${cause.message}`, cause.setting, { cause });
    this.name = 'UpstreamTlsLoadError';
    this.keyPath = `upstreams.${upstream}.tls${cause.setting === undefined ? '' : `.${cause.setting}`}`;
  }
}

export interface UpstreamTlsDeps {
  readonly logger?: Logger | undefined;
  readonly metrics?: { readonly upstreamTls: UpstreamTlsMetrics } | undefined;
}

const SILENT: Logger = pino({ enabled: false });
const NO_COUNT = { inc(): void {} };

export class UpstreamTls {
  readonly upstream: string;
  /** What `{service}` in an expected identity pattern stands for. */
  readonly service: string;
  /** Undefined for an `https://` upstream without a `tls` section: Node's CA bundle, no client certificate. */
  readonly config: UpstreamTlsConfig | undefined;
  /** Verification of the upstream's SPIFFE ID, or undefined: its host name is verified. */
  readonly expected: ExpectedIdentity | undefined;
  /** For `tls.connect`: the SVID check in place of the host name check, when an identity is expected. */
  readonly checkServerIdentity: ((host: string, cert: PeerCertificate) => Error | undefined) | undefined;
  readonly #rotation: CertificateRotation<Material> | undefined;
  readonly #metrics: UpstreamTlsMetrics | undefined;
  readonly #newSession: { inc(): void };
  readonly #resumed: { inc(): void };
  /** Endpoints using it (UpstreamTlsSet). */
  holders = 0;

  /**
   * Loads the files now; throws UpstreamTlsLoadError when they are not a usable set. `service`:
   * what an identity pattern's `{service}` names (default: the upstream's name).
   */
  constructor(
    upstream: string,
    config: UpstreamTlsConfig | undefined,
    deps: UpstreamTlsDeps = {},
    service: string = upstream,
  ) {
    this.upstream = upstream;
    this.service = service;
    this.config = config;
    const metrics = deps.metrics?.upstreamTls;
    this.#metrics = metrics;
    this.expected = config?.identity === undefined ? undefined : expectedIdentity(config.identity, service);
    this.checkServerIdentity = this.expected === undefined ? undefined : svidServerCheck(this.expected);
    this.#newSession = metrics?.handshakeCounter(upstream, 'new') ?? NO_COUNT;
    this.#resumed = metrics?.handshakeCounter(upstream, 'resumed') ?? NO_COUNT;
    if (config === undefined) return;
    try {
      this.#rotation = new CertificateRotation<Material>({
        owner: { upstream },
        what: 'upstream TLS certificate',
        logger: deps.logger ?? SILENT,
        load: (now) => {
          const problems: CertificateLoadError[] = [];
          const material = checkMaterial(config, now, problems);
          if (material === undefined) throw joinProblems(problems);
          return material;
        },
        describe: (m) => ({
          subject: m.client?.subject,
          serial: m.client?.serial,
          notAfter: m.client?.notAfter,
        }),
        reloaded: (outcome, m) => {
          metrics?.recordCertificateReload(upstream, outcome);
          if (outcome === 'success') this.#publishExpiry(m);
        },
      });
    } catch (err) {
      if (err instanceof CertificateLoadError) throw new UpstreamTlsLoadError(upstream, err);
      throw err;
    }
    this.#rotation.start(
      config.watch ? [config.ca, config.cert, config.key].filter((f) => f !== undefined) : [],
    );
    this.#publishExpiry(this.#rotation.material);
  }

  /** The secure context for a new connection; undefined: Node's default (its CA bundle, no client certificate). */
  get context(): SecureContext | undefined {
    return this.#rotation?.material.context;
  }

  /** Changes when the material does: a TLS session from an older generation is not resumed. */
  get generation(): number {
    return this.#rotation?.generation ?? 0;
  }

  /** A handshake completed: a full one, or a resumed session. */
  handshake(resumed: boolean): void {
    if (resumed) this.#resumed.inc();
    else this.#newSession.inc();
  }

  /** Re-read the files now (SIGHUP); a bad set keeps the current one. Returns whether it swapped. */
  reload(trigger: string): boolean {
    return this.#rotation?.reload(trigger) ?? false;
  }

  #publishExpiry(m: Material): void {
    const certs: UpstreamCertificateExpiry[] = m.ca.map((c, i) => ({
      role: 'ca',
      subject: c.subject,
      notAfter: m.caNotAfter[i]!,
    }));
    if (m.client !== undefined && m.clientNotAfter !== undefined)
      certs.unshift({ role: 'client', subject: m.client.subject, notAfter: m.clientNotAfter });
    this.#metrics?.setCertificateExpiry(this.upstream, certs);
  }

  /** Publish its certificates' expiry again (another UpstreamTls of the same upstream closed). */
  republishExpiry(): void {
    if (this.#rotation !== undefined) this.#publishExpiry(this.#rotation.material);
  }

  status(): UpstreamTlsStatus | undefined {
    const cfg = this.config;
    const rotation = this.#rotation;
    if (cfg === undefined || rotation === undefined) return undefined;
    const m = rotation.material;
    return {
      upstream: this.upstream,
      files: { ca: cfg.ca ?? null, cert: cfg.cert ?? null, key: cfg.key ?? null },
      serverName: cfg.serverName ?? null,
      expectedIdentities: this.expected?.expected ?? null,
      client: m.client ?? null,
      ca: m.ca,
      ...rotation.status(),
    };
  }

  /** Stop watching its files; connections still open keep their context. Safe to call twice. */
  close(): void {
    this.#rotation?.close();
  }
}

function keyOf(upstream: string, config: UpstreamTlsConfig | undefined, service: string): string {
  return `${upstream}\0${service}\0${JSON.stringify(config ?? null)}`;
}

/**
 * The UpstreamTls of every upstream in use, one per upstream and `tls` section, reference-counted
 * by the endpoints that use it.
 */
export class UpstreamTlsSet {
  readonly #deps: UpstreamTlsDeps;
  readonly #byKey = new Map<string, UpstreamTls>();

  constructor(deps: UpstreamTlsDeps = {}) {
    this.#deps = deps;
  }

  /**
   * The upstream's TLS for one more holder (an endpoint, or the cluster itself); throws
   * UpstreamTlsLoadError for unusable files.
   */
  acquire(upstream: string, config: UpstreamTlsConfig | undefined, service: string = upstream): UpstreamTls {
    const key = keyOf(upstream, config, service);
    let tls = this.#byKey.get(key);
    if (tls === undefined) {
      tls = new UpstreamTls(upstream, config, this.#deps, service);
      this.#byKey.set(key, tls);
    }
    tls.holders++;
    return tls;
  }

  /** An endpoint is done with it; the last one closes it. */
  release(tls: UpstreamTls): void {
    if (--tls.holders > 0) return;
    const key = keyOf(tls.upstream, tls.config, tls.service);
    if (this.#byKey.get(key) === tls) this.#byKey.delete(key);
    tls.close();
    // Its expiry series go; another generation of the same upstream's settings, still in use, keeps its own.
    const other = [...this.#byKey.values()].find(
      (t) => t.upstream === tls.upstream && t.config !== undefined,
    );
    if (other !== undefined) other.republishExpiry();
    else if (tls.config !== undefined) this.#deps.metrics?.upstreamTls.setCertificateExpiry(tls.upstream, []);
  }

  /** Re-read every upstream's files (SIGHUP). */
  reload(trigger: string): void {
    for (const tls of this.#byKey.values()) tls.reload(trigger);
  }

  statuses(): UpstreamTlsStatus[] {
    return [...this.#byKey.values()].flatMap((t) => t.status() ?? []);
  }
}
