/**
 * A TLS listener's certificate material: the server certificate and key, and the CA bundle client
 * certificates must chain to. Loaded and validated at start (a bad file stops the start), then
 * watched: new contents are validated as a whole (both PEMs parse, the key matches the
 * certificate, it has not expired, OpenSSL accepts the context) before the server's secure context
 * is swapped. A bad or mismatched set is rejected, logged and counted, and the previous context
 * keeps serving. New handshakes use the new context at once; established connections keep theirs.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
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

export class CertificateLoadError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CertificateLoadError';
  }
}

const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----/g;
/** Files changed together (cert, then key) within this long are loaded as one set. */
const COALESCE_MS = 100;

function read(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new CertificateLoadError(`${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
}

function parseCertificates(pem: string, file: string, what: string): X509Certificate[] {
  const blocks = pem.match(PEM_CERT_RE) ?? [];
  if (blocks.length === 0) throw new CertificateLoadError(`${what} ${file}: no PEM certificate found`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new CertificateLoadError(`${what} ${file}: certificate ${i + 1} cannot be parsed`, {
        cause: err,
      });
    }
  });
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

/** Read and check everything; throws CertificateLoadError naming the file and the problem. */
function loadMaterial(cfg: TlsConfig, now: number): Material {
  const certPem = read(cfg.cert, 'certificate');
  const keyPem = read(cfg.key, 'key');
  const chain = parseCertificates(certPem, cfg.cert, 'certificate');
  const leaf = chain[0]!;
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw new CertificateLoadError(
      `key ${cfg.key}: not a PEM private key (encrypted keys are not supported)`,
      {
        cause: err,
      },
    );
  }
  if (!leaf.checkPrivateKey(key))
    throw new CertificateLoadError(`key ${cfg.key} does not match certificate ${cfg.cert}`);
  if (leaf.validToDate.getTime() <= now)
    throw new CertificateLoadError(
      `certificate ${cfg.cert} expired at ${leaf.validToDate.toISOString()} (serial ${leaf.serialNumber})`,
    );

  let caPem: string | undefined;
  let ca: X509Certificate[] = [];
  if (cfg.clientAuth !== 'none' && cfg.clientCa) {
    caPem = read(cfg.clientCa, 'clientCa');
    ca = parseCertificates(caPem, cfg.clientCa, 'clientCa');
  }

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
    throw new CertificateLoadError(`TLS context from ${cfg.cert} and ${cfg.key}: ${(err as Error).message}`, {
      cause: err,
    });
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
        this.reload();
      }, COALESCE_MS);
      this.#timer.unref();
    }
  }

  /** Load the files again and swap the context if they are a good set. Returns whether it swapped. */
  reload(): boolean {
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
        { listener: this.listener, error: message },
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
