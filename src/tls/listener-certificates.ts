/**
 * A TLS listener's certificate material: the server certificate and key, and the CA bundle client
 * certificates must chain to. Loaded and validated at start (a bad file stops the start), then
 * reloaded when the files change and on demand (SIGHUP): new contents are validated as a whole
 * (both PEMs parse, the key matches the certificate, it has not expired, OpenSSL accepts the
 * context) before the server's secure context is swapped. A bad or mismatched set is rejected,
 * logged and counted, and the previous context keeps serving. New handshakes use the new context
 * at once; established connections keep theirs.
 */
import type { SecureContext, SecureContextOptions } from 'node:tls';
import type { Logger } from 'pino';
import { normalizeHost } from '../dataplane/routing/host.ts';
import type { GatewayMetrics } from '../telemetry/metrics.ts';
import {
  buildContext,
  type CertificateInfo,
  CertificateLoadError,
  type CheckedPair,
  checkCaBundle,
  checkPair,
  describeCertificate,
  joinProblems,
} from './pem.ts';
import { CertificateRotation, type RotationStatus } from './rotation.ts';
import type { ClientAuthMode, TlsConfig } from './schema.ts';

/** What `GET /v1/certs` shows for one listener. */
export interface ListenerCertificateStatus extends RotationStatus {
  readonly listener: string;
  readonly clientAuth: ClientAuthMode;
  readonly files: { readonly cert: string; readonly key: string; readonly clientCa: string | null };
  readonly server: CertificateInfo;
  /** Intermediate certificates sent after the server certificate. */
  readonly intermediates: number;
  readonly clientCa: readonly CertificateInfo[];
  /** The certificates chosen by SNI (`tls.certificates`), with the names each one serves. */
  readonly sni: readonly SniCertificateStatus[];
}

export interface SniCertificateStatus {
  readonly names: readonly string[];
  readonly files: { readonly cert: string; readonly key: string };
  readonly server: CertificateInfo;
  readonly intermediates: number;
}

/** A certificate chosen by SNI: its context, built once per load. */
interface SniEntry {
  readonly status: SniCertificateStatus;
  readonly notAfter: Date;
  readonly context: SecureContext;
}

interface Material {
  readonly options: SecureContextOptions;
  readonly sni: readonly SniEntry[];
  /** Lower-case DNS name → context; `*.example.com` is kept under `.example.com`. */
  readonly byName: ReadonlyMap<string, SecureContext>;
  readonly server: CertificateInfo;
  readonly serverNotAfter: Date;
  readonly serverUri: string | undefined;
  readonly intermediates: number;
  readonly clientCa: readonly CertificateInfo[];
  readonly clientCaNotAfter: readonly Date[];
}

/** The secure context options of one certificate/key pair, with the listener's shared settings. */
function contextOptions(cfg: TlsConfig, pair: CheckedPair, caPem: string | undefined): SecureContextOptions {
  const options: SecureContextOptions = {
    cert: pair.certPem,
    key: pair.keyPem,
    minVersion: cfg.minVersion,
    maxVersion: cfg.maxVersion,
    honorCipherOrder: true,
    ciphers: cfg.ciphers,
  };
  if (caPem !== undefined) options.ca = caPem;
  return options;
}

/** The names an SNI certificate serves: its DNS SANs, normalised as routing compares hosts. */
function sniNames(info: CertificateInfo): string[] {
  return info.sans.dns.map(normalizeHost);
}

/**
 * The certificates chosen by SNI: each pair checked like the main one, and named by its DNS SANs.
 * A certificate without DNS names could never be chosen, and a name two certificates claim would
 * be served by whichever came first: both are problems.
 */
function checkSni(
  cfg: TlsConfig,
  caPem: string | undefined,
  now: number,
  problems: CertificateLoadError[],
): { entries: SniEntry[]; byName: Map<string, SecureContext> } | undefined {
  const entries: SniEntry[] = [];
  const byName = new Map<string, SecureContext>();
  const owner = new Map<string, number>();
  const before = problems.length;
  cfg.certificates.forEach((files, i) => {
    const settings = {
      cert: `certificates.${i}.cert` as const,
      key: `certificates.${i}.key` as const,
    };
    const pair = checkPair(files.cert, files.key, settings, now, problems);
    if (pair === undefined) return;
    const server = describeCertificate(pair.leaf);
    const names = sniNames(server);
    if (names.length === 0) {
      const message = `certificate ${files.cert} has no DNS subject alternative name, so no SNI name selects it`;
      problems.push(new CertificateLoadError(message, settings.cert));
      return;
    }
    const context = buildContext(
      contextOptions(cfg, pair, caPem),
      `${files.cert} and ${files.key}`,
      settings.cert,
      problems,
    );
    if (context === undefined) return;
    for (const name of names) {
      const other = owner.get(name);
      if (other !== undefined) {
        const message = `certificate ${files.cert} serves ${name}, which certificates[${other}] already serves`;
        problems.push(new CertificateLoadError(message, settings.cert));
        continue;
      }
      owner.set(name, i);
      byName.set(name.startsWith('*.') ? name.slice(1) : name, context);
    }
    entries.push({
      status: {
        names,
        files: { cert: files.cert, key: files.key },
        server,
        intermediates: pair.chain.length - 1,
      },
      notAfter: pair.leaf.validToDate,
      context,
    });
  });
  return problems.length > before ? undefined : { entries, byName };
}

/**
 * Read and check everything, adding each problem to `problems` (a CertificateLoadError naming the
 * file and what is wrong); returns the material only when there is none. A file that cannot be
 * read or parsed is not checked further; the key is matched against the certificate when both
 * parse; OpenSSL sees a set only when nothing else is wrong with it.
 */
function checkMaterial(cfg: TlsConfig, now: number, problems: CertificateLoadError[]): Material | undefined {
  const pair = checkPair(cfg.cert, cfg.key, { cert: 'cert', key: 'key' }, now, problems);
  const caFile = cfg.clientAuth !== 'none' ? cfg.clientCa : undefined;
  const ca =
    caFile === undefined ? { pem: undefined, certificates: [] } : checkCaBundle(caFile, 'clientCa', problems);
  const sni = checkSni(cfg, ca?.pem, now, problems);
  if (problems.length > 0 || pair === undefined || ca === undefined || sni === undefined) return undefined;

  const options = contextOptions(cfg, pair, ca.pem);
  // What the server will build from these options.
  if (buildContext(options, `${cfg.cert} and ${cfg.key}`, undefined, problems) === undefined)
    return undefined;
  const server = describeCertificate(pair.leaf);
  return {
    options,
    sni: sni.entries,
    byName: sni.byName,
    server,
    serverNotAfter: pair.leaf.validToDate,
    serverUri: server.sans.uris[0],
    intermediates: pair.chain.length - 1,
    clientCa: ca.certificates.map(describeCertificate),
    clientCaNotAfter: ca.certificates.map((c) => c.validToDate),
  };
}

/** The material, or a CertificateLoadError with every problem found (joined by `; `). */
function loadMaterial(cfg: TlsConfig, now: number): Material {
  const problems: CertificateLoadError[] = [];
  const material = checkMaterial(cfg, now, problems);
  if (material !== undefined) return material;
  throw joinProblems(problems);
}

/**
 * Every problem with a listener's certificate files, found by the same checks as at start and on
 * reload (readable, PEM, key matches certificate, not expired, accepted by OpenSSL); empty when
 * they make a usable set. For `peregrine validate`.
 */
export function checkCertificateFiles(cfg: TlsConfig, now: number = Date.now()): CertificateLoadError[] {
  const problems: CertificateLoadError[] = [];
  checkMaterial(cfg, now, problems);
  return problems;
}

export interface CertificateDeps {
  readonly logger: Logger;
  readonly metrics: GatewayMetrics;
}

export class ListenerCertificates {
  readonly listener: string;
  readonly config: TlsConfig;
  readonly #deps: CertificateDeps;
  readonly #rotation: CertificateRotation<Material>;

  /** Loads the files now; throws CertificateLoadError when they are not a usable set. */
  constructor(listener: string, config: TlsConfig, deps: CertificateDeps) {
    this.listener = listener;
    this.config = config;
    this.#deps = deps;
    this.#rotation = new CertificateRotation<Material>({
      owner: { listener },
      what: 'TLS certificate',
      logger: deps.logger,
      load: (now) => loadMaterial(config, now),
      describe: (m) => ({ subject: m.server.subject, serial: m.server.serial, notAfter: m.server.notAfter }),
      reloaded: (outcome, m) => {
        deps.metrics.recordCertificateReload(listener, outcome);
        if (outcome === 'success') this.#publishExpiry(m);
      },
    });
    this.#publishExpiry(this.#rotation.material);
  }

  /** Options for the server's secure context (certificate, key, CA bundle, versions). */
  get secureContextOptions(): SecureContextOptions {
    return this.#rotation.material.options;
  }

  /**
   * The secure context for a client's SNI name: the `tls.certificates` entry one of whose DNS
   * SANs is that name, else one whose wildcard covers its first label; undefined (the default
   * certificate) otherwise. Names compare in lower case, without a trailing dot. A reload swaps
   * the whole table at once.
   */
  contextFor(servername: string): SecureContext | undefined {
    const byName = this.#rotation.material.byName;
    if (byName.size === 0 || servername === '') return undefined;
    const name = normalizeHost(servername);
    const exact = byName.get(name);
    if (exact !== undefined) return exact;
    const dot = name.indexOf('.');
    return dot > 0 ? byName.get(name.slice(dot)) : undefined;
  }

  /** First URI SAN of the server certificate (the gateway's own SPIFFE ID, for XFCC `By`). */
  get serverUri(): string | undefined {
    return this.#rotation.material.serverUri;
  }

  /**
   * Start watching the files (when `watch` is on); `apply` installs new options on the server.
   * Reloads do nothing before this (the server is not listening yet).
   */
  watch(apply: (options: SecureContextOptions) => void): void {
    const cfg = this.config;
    const files: string[] = [];
    if (cfg.watch) {
      files.push(cfg.cert, cfg.key);
      for (const c of cfg.certificates) files.push(c.cert, c.key);
      if (cfg.clientAuth !== 'none' && cfg.clientCa) files.push(cfg.clientCa);
    }
    this.#rotation.start(files, (m) => apply(m.options));
  }

  /**
   * Load the files again and swap the context if they are a good set; `trigger` (`file`,
   * `signal`, ...) is logged. Returns whether it swapped. Does nothing before `watch()` installed
   * the server's context setter (not listening yet) or after `close()`.
   */
  reload(trigger: string): boolean {
    return this.#rotation.reload(trigger);
  }

  #publishExpiry(m: Material): void {
    this.#deps.metrics.setCertificateExpiry(this.listener, [
      { role: 'server', subject: m.server.subject, notAfter: m.serverNotAfter },
      ...m.sni.map((e) => ({
        role: 'server' as const,
        subject: e.status.server.subject,
        notAfter: e.notAfter,
      })),
      ...m.clientCa.map((c, i) => ({
        role: 'client_ca' as const,
        subject: c.subject,
        notAfter: m.clientCaNotAfter[i]!,
      })),
    ]);
  }

  status(): ListenerCertificateStatus {
    const m = this.#rotation.material;
    return {
      listener: this.listener,
      clientAuth: this.config.clientAuth,
      files: {
        cert: this.config.cert,
        key: this.config.key,
        clientCa: this.config.clientAuth !== 'none' ? (this.config.clientCa ?? null) : null,
      },
      server: m.server,
      intermediates: m.intermediates,
      clientCa: m.clientCa,
      sni: m.sni.map((e) => e.status),
      ...this.#rotation.status(),
    };
  }

  /** Stop watching. Safe to call twice. */
  close(): void {
    this.#rotation.close();
  }
}
