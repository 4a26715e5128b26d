/**
 * Reading and checking certificate material from PEM files, for both sides of TLS: every problem
 * names the file, the setting it came from and what is wrong, and a check collects all of them
 * rather than stopping at the first.
 */
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls';
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

/**
 * The key of a `tls` section naming the file a problem is about: `cert`, `key`, `clientCa` or
 * `ca`, or `certificates.<i>.cert` / `certificates.<i>.key` for a listener's certificate chosen
 * by SNI.
 */
export type CertificateSetting =
  | 'cert'
  | 'key'
  | 'clientCa'
  | 'ca'
  | `certificates.${number}.${'cert' | 'key'}`;

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

export function readPem(file: string, what: string, setting: CertificateSetting): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new CertificateLoadError(`${what} ${file}: cannot read (${reason})`, setting);
  }
}

export function parseCertificates(
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
export function step<T>(problems: CertificateLoadError[], run: () => T): T | undefined {
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

export interface CheckedPair {
  readonly certPem: string;
  readonly keyPem: string;
  readonly chain: readonly X509Certificate[];
  readonly leaf: X509Certificate;
}

/**
 * Read and check one certificate/key pair: both parse, the key matches the certificate, and it has
 * not expired. Problems go to `problems`; the pair is returned only when it has none.
 */
export function checkPair(
  certFile: string,
  keyFile: string,
  settings: { cert: CertificateSetting; key: CertificateSetting },
  now: number,
  problems: CertificateLoadError[],
): CheckedPair | undefined {
  const before = problems.length;
  const certPem = step(problems, () => readPem(certFile, 'certificate', settings.cert));
  const chain =
    certPem === undefined
      ? undefined
      : step(problems, () => parseCertificates(certPem, certFile, 'certificate', settings.cert));
  const keyPem = step(problems, () => readPem(keyFile, 'key', settings.key));
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

/** Read and parse a CA bundle: its PEM text and certificates, or undefined with the problems. */
export function checkCaBundle(
  file: string,
  setting: CertificateSetting,
  problems: CertificateLoadError[],
): { pem: string; certificates: X509Certificate[] } | undefined {
  const pem = step(problems, () => readPem(file, setting, setting));
  if (pem === undefined) return undefined;
  const certificates = step(problems, () => parseCertificates(pem, file, setting, setting));
  return certificates === undefined ? undefined : { pem, certificates };
}

/** What OpenSSL builds from the options (its own checks: key usage, curve, ciphers, ...). */
export function buildContext(
  options: SecureContextOptions,
  files: string,
  setting: CertificateSetting | undefined,
  problems: CertificateLoadError[],
): SecureContext | undefined {
  try {
    return createSecureContext(options);
  } catch (err) {
    const message = `TLS context from ${files}: ${(err as Error).message}`;
    problems.push(new CertificateLoadError(message, setting, { cause: err }));
    return undefined;
  }
}

/** One CertificateLoadError for every problem found (joined by `; `). */
export function joinProblems(problems: readonly CertificateLoadError[]): CertificateLoadError {
  if (problems.length === 1) return problems[0]!;
  return new CertificateLoadError(problems.map((p) => p.message).join('; '), undefined, {
    cause: problems[0],
  });
}
