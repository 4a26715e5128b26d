/**
 * A TLS listener's certificate material: the server certificate and key, and the CA bundle client
 * certificates must chain to. Loaded and validated at start (a bad file stops the start), then
 * reloaded when the files change and on demand (SIGHUP): new contents are validated as a whole
 * (both PEMs parse, the key matches the certificate, it has not expired, OpenSSL accepts the
 * context) before the server's secure context is swapped. A bad or mismatched set is rejected,
 * logged and counted, and the previous context keeps serving. New handshakes use the new context
 * at once; established connections keep theirs.
 */
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import type { Logger } from 'pino';
import { type ConfigWatcher, watchConfigFile } from '../../config/watch.ts';
import type { GatewayMetrics } from '../../telemetry/metrics.ts';
import type { ClientAuthMode, TlsConfig } from './tls-schema.ts';
import { readSubjectAltNames, type SubjectAltNames } from './x509-der.ts';

export interface CertificateInfo {
  /** RFC 4514 form, e.g. `CN=api.example.com,O=Example`. */
  readonly subject: string;
  readonly issuer: string;
  readonly sans: SubjectAltNames;
  /** Upper-case hex. */
  readonly serial: string;
  /** `AA:BB:...` */
  readonly fingerprint256: string;
  readonly notBefore: string;
  readonly notAfter: string;
}

/** What `GET /v1/certs` shows for one listener. */
export interface ListenerCertificateStatus {
  readonly listener: string;
  readonly clientAuth: ClientAuthMode;
  readonly files: { readonly cert: string; readonly key: string; readonly clientCa: string | null };
  readonly server: CertificateInfo;
  /** Intermediate certificates sent after the server certificate. */
  readonly intermediates: number;
  readonly clientCa: readonly CertificateInfo[];
  readonly watching: boolean;
  /** Reloads since start (the start-up load is not counted). */
  readonly reloads: { readonly success: number; readonly failure: number };
  readonly loadedAt: string;
  readonly lastError: { readonly message: string; readonly at: string } | null;
}

interface Material {
  readonly options: SecureContextOptions;
  readonly server: CertificateInfo;
  readonly serverNotAfter: Date;
  readonly serverUri: string | undefined;
  readonly intermediates: number;
  readonly clientCa: readonly CertificateInfo[];
  readonly clientCaNotAfter: readonly Date[];
}

/** The `tls` key naming the file a problem is about. */
export type CertificateSetting = 'cert' | 'key' | 'clientCa';

export class CertificateLoadError extends Error {
  /** The file's setting; undefined when the set as a whole is refused (OpenSSL, `ciphers`). */
  readonly setting: CertificateSetting | undefined;

  constructor(message: string, setting: CertificateSetting | undefined, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CertificateLoadError';
    this.setting = setting;
  }
}

const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----/g;
/** Files changed together (cert, then key) within this long are loaded as one set. */
const COALESCE_MS = 100;

function read(file: string, what: string, setting: CertificateSetting): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new CertificateLoadError(`${what} ${file}: cannot read (${reason})`, setting);
  }
}

function parseCertificates(
  pem: string,
  file: string,
  what: string,
  setting: CertificateSetting,
): X509Certificate[] {
  const blocks = pem.match(PEM_CERT_RE) ?? [];
  if (blocks.length === 0)
    throw new CertificateLoadError(`${what} ${file}: no PEM certificate found`, setting);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new CertificateLoadError(`${what} ${file}: certificate ${i + 1} cannot be parsed`, setting, {
        cause: err,
      });
    }
  });
}

function parseKey(pem: string, file: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (err) {
    const message = `key ${file}: not a PEM private key (encrypted keys are not supported)`;
    throw new CertificateLoadError(message, 'key', { cause: err });
  }
}

/** Run one loading step; a CertificateLoadError is added to `problems` instead of thrown. */
function step<T>(problems: CertificateLoadError[], run: () => T): T | undefined {
  try {
    return run();
  } catch (err) {
    if (!(err instanceof CertificateLoadError)) throw err;
    problems.push(err);
    return undefined;
  }
}

function rfc4514(multiline: string): string {
  return multiline ? multiline.split('\n').reverse().join(',') : '';
}

export function describeCertificate(cert: X509Certificate): CertificateInfo {
  let sans: SubjectAltNames;
  try {
    sans = readSubjectAltNames(cert.raw);
  } catch {
    sans = { dns: [], uris: [], ips: [], emails: [] };
  }
  return {
    subject: rfc4514(cert.subject),
    issuer: rfc4514(cert.issuer),
    sans,
    serial: cert.serialNumber,
    fingerprint256: cert.fingerprint256,
    notBefore: cert.validFromDate.toISOString(),
    notAfter: cert.validToDate.toISOString(),
  };
}

/**
 * Read and check everything, adding each problem to `problems` (a CertificateLoadError naming the
 * file and what is wrong); returns the material only when there is none. A file that cannot be
 * read or parsed is not checked further; the key is matched against the certificate when both
 * parse; OpenSSL sees the set only when nothing else is wrong.
 */
function checkMaterial(cfg: TlsConfig, now: number, problems: CertificateLoadError[]): Material | undefined {
  const certPem = step(problems, () => read(cfg.cert, 'certificate', 'cert'));
  const chain =
    certPem === undefined
      ? undefined
      : step(problems, () => parseCertificates(certPem, cfg.cert, 'certificate', 'cert'));
  const keyPem = step(problems, () => read(cfg.key, 'key', 'key'));
  const key = keyPem === undefined ? undefined : step(problems, () => parseKey(keyPem, cfg.key));
  const leaf = chain?.[0];
  if (leaf !== undefined && key !== undefined && !leaf.checkPrivateKey(key))
    problems.push(new CertificateLoadError(`key ${cfg.key} does not match certificate ${cfg.cert}`, 'key'));
  if (leaf !== undefined && leaf.validToDate.getTime() <= now)
    problems.push(
      new CertificateLoadError(
        `certificate ${cfg.cert} expired at ${leaf.validToDate.toISOString()} (serial ${leaf.serialNumber})`,
        'cert',
      ),
    );

  const caFile = cfg.clientAuth !== 'none' ? cfg.clientCa : undefined;
  const caPem = caFile === undefined ? undefined : step(problems, () => read(caFile, 'clientCa', 'clientCa'));
  const ca =
    caFile === undefined || caPem === undefined
      ? []
      : step(problems, () => parseCertificates(caPem, caFile, 'clientCa', 'clientCa'));
  if (
    problems.length > 0 ||
    certPem === undefined ||
    chain === undefined ||
    leaf === undefined ||
    keyPem === undefined ||
    ca === undefined
  )
    return undefined;

  const options: SecureContextOptions = {
    cert: certPem,
    key: keyPem,
    minVersion: cfg.minVersion,
    maxVersion: cfg.maxVersion,
    honorCipherOrder: true,
  };
  if (cfg.ciphers) options.ciphers = cfg.ciphers;
  if (caPem !== undefined) options.ca = caPem;
  try {
    // What the server will build from these options; OpenSSL's own checks (key usage, curve, ...).
    createSecureContext(options);
  } catch (err) {
    const message = `TLS context from ${cfg.cert} and ${cfg.key}: ${(err as Error).message}`;
    problems.push(new CertificateLoadError(message, undefined, { cause: err }));
    return undefined;
  }
  const server = describeCertificate(leaf);
  return {
    options,
    server,
    serverNotAfter: leaf.validToDate,
    serverUri: server.sans.uris[0],
    intermediates: chain.length - 1,
    clientCa: ca.map(describeCertificate),
    clientCaNotAfter: ca.map((c) => c.validToDate),
  };
}

/** The material, or a CertificateLoadError with every problem found (joined by `; `). */
function loadMaterial(cfg: TlsConfig, now: number): Material {
  const problems: CertificateLoadError[] = [];
  const material = checkMaterial(cfg, now, problems);
  if (material !== undefined) return material;
  if (problems.length === 1) throw problems[0]!;
  throw new CertificateLoadError(problems.map((p) => p.message).join('; '), undefined, {
    cause: problems[0],
  });
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
  #material: Material;
  #loadedAt = new Date();
  #success = 0;
  #failure = 0;
  #lastError: { message: string; at: string } | null = null;
  #watchers: ConfigWatcher[] = [];
  #timer: NodeJS.Timeout | undefined;
  #apply: ((options: SecureContextOptions) => void) | undefined;
  #closed = false;

  /** Loads the files now; throws CertificateLoadError when they are not a usable set. */
  constructor(listener: string, config: TlsConfig, deps: CertificateDeps) {
    this.listener = listener;
    this.config = config;
    this.#deps = deps;
    this.#material = loadMaterial(config, Date.now());
    this.#publishExpiry();
  }

  /** Options for the server's secure context (certificate, key, CA bundle, versions). */
  get secureContextOptions(): SecureContextOptions {
    return this.#material.options;
  }

  /** First URI SAN of the server certificate (the gateway's own SPIFFE ID, for XFCC `By`). */
  get serverUri(): string | undefined {
    return this.#material.serverUri;
  }

  /**
   * Start watching the files (when `watch` is on); `apply` installs new options on the server.
   * Watching the files' directories survives atomic renames and Kubernetes secret symlink swaps.
   */
  watch(apply: (options: SecureContextOptions) => void): void {
    this.#apply = apply;
    if (!this.config.watch || this.#closed) return;
    const files = [this.config.cert, this.config.key];
    if (this.config.clientAuth !== 'none' && this.config.clientCa) files.push(this.config.clientCa);
    for (const file of files) this.#watchers.push(watchConfigFile(file, () => this.#schedule()));
  }

  #schedule(): void {
    if (this.#closed) return;
    if (this.#timer) this.#timer.refresh();
    else {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.reload('file');
      }, COALESCE_MS);
      this.#timer.unref();
    }
  }

  /**
   * Load the files again and swap the context if they are a good set; `trigger` (`file`,
   * `signal`, ...) is logged. Returns whether it swapped. Does nothing before `watch()` installed
   * the server's context setter (not listening yet) or after `close()`.
   */
  reload(trigger: string): boolean {
    if (this.#closed || !this.#apply) return false;
    const { logger, metrics } = this.#deps;
    let material: Material;
    try {
      material = loadMaterial(this.config, Date.now());
      this.#apply(material.options);
    } catch (err) {
      const message =
        err instanceof CertificateLoadError ? err.message : `TLS context: ${(err as Error).message}`;
      this.#failure++;
      this.#lastError = { message, at: new Date().toISOString() };
      metrics.recordCertificateReload(this.listener, 'failure');
      logger.error(
        { listener: this.listener, trigger, error: message },
        'TLS certificate reload rejected; the previous certificate keeps serving',
      );
      return false;
    }
    this.#material = material;
    this.#loadedAt = new Date();
    this.#success++;
    this.#lastError = null;
    metrics.recordCertificateReload(this.listener, 'success');
    this.#publishExpiry();
    logger.info(
      {
        listener: this.listener,
        trigger,
        subject: material.server.subject,
        serial: material.server.serial,
        notAfter: material.server.notAfter,
      },
      'TLS certificate reloaded',
    );
    return true;
  }

  #publishExpiry(): void {
    const m = this.#material;
    this.#deps.metrics.setCertificateExpiry(this.listener, [
      { role: 'server', subject: m.server.subject, notAfter: m.serverNotAfter },
      ...m.clientCa.map((c, i) => ({
        role: 'client_ca' as const,
        subject: c.subject,
        notAfter: m.clientCaNotAfter[i]!,
      })),
    ]);
  }

  status(): ListenerCertificateStatus {
    const m = this.#material;
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
      watching: this.#watchers.length > 0,
      reloads: { success: this.#success, failure: this.#failure },
      loadedAt: this.#loadedAt.toISOString(),
      lastError: this.#lastError,
    };
  }

  /** Stop watching. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    for (const w of this.#watchers) w.close();
    this.#watchers = [];
  }
}
