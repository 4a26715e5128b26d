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
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls';
import type { Logger } from 'pino';
import { type ConfigWatcher, watchConfigFile } from '../../config/watch.ts';
import type { GatewayMetrics } from '../../telemetry/metrics.ts';
import { normalizeHost } from '../routing/host.ts';
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
  /** The certificates chosen by SNI (`tls.certificates`), with the names each one serves. */
  readonly sni: readonly SniCertificateStatus[];
  readonly watching: boolean;
  /** Reloads since start (the start-up load is not counted). */
  readonly reloads: { readonly success: number; readonly failure: number };
  readonly loadedAt: string;
  readonly lastError: { readonly message: string; readonly at: string } | null;
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

/**
 * The `tls` key naming the file a problem is about: `cert`, `key`, `clientCa`, or
 * `certificates.<i>.cert` / `certificates.<i>.key` for a certificate chosen by SNI.
 */
export type CertificateSetting = 'cert' | 'key' | 'clientCa' | `certificates.${number}.${'cert' | 'key'}`;

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

function parseKey(pem: string, file: string, setting: CertificateSetting): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (err) {
    const message = `key ${file}: not a PEM private key (encrypted keys are not supported)`;
    throw new CertificateLoadError(message, setting, { cause: err });
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
interface CheckedPair {
  readonly certPem: string;
  readonly keyPem: string;
  readonly chain: readonly X509Certificate[];
  readonly leaf: X509Certificate;
}

/** Read and check one certificate/key pair: both parse, the key matches, not expired. */
function checkPair(
  certFile: string,
  keyFile: string,
  settings: { cert: CertificateSetting; key: CertificateSetting },
  now: number,
  problems: CertificateLoadError[],
): CheckedPair | undefined {
  const before = problems.length;
  const certPem = step(problems, () => read(certFile, 'certificate', settings.cert));
  const chain =
    certPem === undefined
      ? undefined
      : step(problems, () => parseCertificates(certPem, certFile, 'certificate', settings.cert));
  const keyPem = step(problems, () => read(keyFile, 'key', settings.key));
  const key =
    keyPem === undefined ? undefined : step(problems, () => parseKey(keyPem, keyFile, settings.key));
  const leaf = chain?.[0];
  if (leaf !== undefined && key !== undefined && !leaf.checkPrivateKey(key))
    problems.push(
      new CertificateLoadError(`key ${keyFile} does not match certificate ${certFile}`, settings.key),
    );
  if (leaf !== undefined && leaf.validToDate.getTime() <= now)
    problems.push(
      new CertificateLoadError(
        `certificate ${certFile} expired at ${leaf.validToDate.toISOString()} (serial ${leaf.serialNumber})`,
        settings.cert,
      ),
    );
  if (problems.length > before || certPem === undefined || chain === undefined || leaf === undefined)
    return undefined;
  return keyPem === undefined ? undefined : { certPem, keyPem, chain, leaf };
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

/** What OpenSSL builds from the options (its own checks: key usage, curve, ciphers, ...). */
function buildContext(
  options: SecureContextOptions,
  certFile: string,
  keyFile: string,
  setting: CertificateSetting | undefined,
  problems: CertificateLoadError[],
): SecureContext | undefined {
  try {
    return createSecureContext(options);
  } catch (err) {
    const message = `TLS context from ${certFile} and ${keyFile}: ${(err as Error).message}`;
    problems.push(new CertificateLoadError(message, setting, { cause: err }));
    return undefined;
  }
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
      files.cert,
      files.key,
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
  const caPem = caFile === undefined ? undefined : step(problems, () => read(caFile, 'clientCa', 'clientCa'));
  const ca =
    caFile === undefined || caPem === undefined
      ? []
      : step(problems, () => parseCertificates(caPem, caFile, 'clientCa', 'clientCa'));
  const sni = checkSni(cfg, caPem, now, problems);
  if (problems.length > 0 || pair === undefined || ca === undefined || sni === undefined) return undefined;

  const options = contextOptions(cfg, pair, caPem);
  // What the server will build from these options.
  if (buildContext(options, cfg.cert, cfg.key, undefined, problems) === undefined) return undefined;
  const server = describeCertificate(pair.leaf);
  return {
    options,
    sni: sni.entries,
    byName: sni.byName,
    server,
    serverNotAfter: pair.leaf.validToDate,
    serverUri: server.sans.uris[0],
    intermediates: pair.chain.length - 1,
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

  /**
   * The secure context for a client's SNI name: the `tls.certificates` entry one of whose DNS
   * SANs is that name, else one whose wildcard covers its first label; undefined (the default
   * certificate) otherwise. Names compare in lower case, without a trailing dot. A reload swaps
   * the whole table at once.
   */
  contextFor(servername: string): SecureContext | undefined {
    const byName = this.#material.byName;
    if (byName.size === 0 || servername === '') return undefined;
    const name = normalizeHost(servername);
    const exact = byName.get(name);
    if (exact !== undefined) return exact;
    const dot = name.indexOf('.');
    return dot > 0 ? byName.get(name.slice(dot)) : undefined;
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
    for (const c of this.config.certificates) files.push(c.cert, c.key);
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
      sni: m.sni.map((e) => e.status),
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
