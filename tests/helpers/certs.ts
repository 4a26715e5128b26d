/**
 * Real X.509 certificates made in the test process: a throwaway CA and the server and client
 * certificates the TLS/mTLS tests need (good, expired, not yet valid, from another CA, wrong EKU,
 * tricky SANs). Pure JS (@peculiar/x509 over WebCrypto, ECDSA P-256), so tests do not depend on
 * the openssl CLI; see docs/decisions.md.
 */
import 'reflect-metadata';
import { KeyObject, webcrypto, X509Certificate } from 'node:crypto';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type KeyPair = webcrypto.CryptoKeyPair;

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const HOUR = 3600_000;
const DAY = 24 * HOUR;

export type Eku = 'serverAuth' | 'clientAuth';

export interface IssueOptions {
  /** Subject common name. */
  cn: string;
  /** Extra subject attributes, e.g. `O=Example, OU=Payments`. */
  subjectExtra?: string;
  dns?: readonly string[];
  ips?: readonly string[];
  uris?: readonly string[];
  /** Extended key usages; `[]` leaves the extension out. Default: clientAuth and serverAuth. */
  eku?: readonly Eku[];
  notBefore?: Date;
  notAfter?: Date;
  /** Hex serial; random when absent. */
  serial?: string;
  /** The subject's key: ECDSA P-256 (default) or RSA 2048 (for tests of RSA-only cipher suites). */
  keyType?: 'ecdsa' | 'rsa';
}

export interface IssuedCert {
  /** Certificate PEM. */
  readonly cert: string;
  /** PKCS#8 private key PEM. */
  readonly key: string;
  readonly x509: X509Certificate;
  /** Upper-case hex, as Node reports it. */
  readonly serial: string;
  /** `AA:BB:...`, as Node reports it. */
  readonly fingerprint256: string;
  /** Lower-case hex SHA-256 of the DER certificate (the XFCC `Hash`). */
  readonly sha256: string;
}

function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0]! &= 0x7f; // positive INTEGER
  bytes[0]! |= 0x10; // no leading zero byte to strip, so the serial keeps its 16 bytes
  return Buffer.from(bytes).toString('hex');
}

const RSA_ALG = {
  name: 'RSASSA-PKCS1-v1_5',
  modulusLength: 2048,
  publicExponent: new Uint8Array([1, 0, 1]),
  hash: 'SHA-256',
};

async function newKeys(type: 'ecdsa' | 'rsa' = 'ecdsa'): Promise<KeyPair> {
  const alg = type === 'rsa' ? RSA_ALG : ALG;
  return (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as KeyPair;
}

function keyPem(keys: KeyPair): string {
  return KeyObject.from(keys.privateKey).export({ type: 'pkcs8', format: 'pem' }) as string;
}

function describe(cert: x509.X509Certificate, key: string): IssuedCert {
  const pem = cert.toString('pem');
  const node = new X509Certificate(pem);
  return {
    cert: `${pem}\n`,
    key,
    x509: node,
    serial: node.serialNumber,
    fingerprint256: node.fingerprint256,
    sha256: node.fingerprint256.replaceAll(':', '').toLowerCase(),
  };
}

export class TestCa {
  readonly name: string;
  readonly keys: KeyPair;
  readonly certificate: x509.X509Certificate;

  private constructor(name: string, keys: KeyPair, certificate: x509.X509Certificate) {
    this.name = name;
    this.keys = keys;
    this.certificate = certificate;
  }

  static async create(cn = 'Peregrine Test CA'): Promise<TestCa> {
    const keys = await newKeys();
    const certificate = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(),
      name: `CN=${cn}`,
      notBefore: new Date(Date.now() - DAY),
      notAfter: new Date(Date.now() + 30 * DAY),
      signingAlgorithm: ALG,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    return new TestCa(cn, keys, certificate);
  }

  /** The CA certificate, PEM. */
  get cert(): string {
    return `${this.certificate.toString('pem')}\n`;
  }

  async issue(opts: IssueOptions): Promise<IssuedCert> {
    const keys = await newKeys(opts.keyType);
    const names: x509.JsonGeneralName[] = [
      ...(opts.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
      ...(opts.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
      ...(opts.uris ?? []).map((value) => ({ type: 'url' as const, value })),
    ];
    const eku = opts.eku ?? ['serverAuth', 'clientAuth'];
    const extensions: x509.Extension[] = [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      await x509.AuthorityKeyIdentifierExtension.create(this.keys.publicKey),
    ];
    if (eku.length > 0)
      extensions.push(new x509.ExtendedKeyUsageExtension(eku.map((u) => x509.ExtendedKeyUsage[u])));
    if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names));
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: opts.serial ?? randomSerial(),
      subject: opts.subjectExtra ? `CN=${opts.cn}, ${opts.subjectExtra}` : `CN=${opts.cn}`,
      issuer: this.certificate.subject,
      notBefore: opts.notBefore ?? new Date(Date.now() - HOUR),
      notAfter: opts.notAfter ?? new Date(Date.now() + 7 * DAY),
      signingAlgorithm: ALG,
      publicKey: keys.publicKey,
      signingKey: this.keys.privateKey,
      extensions,
    });
    return describe(cert, keyPem(keys));
  }

  /**
   * A certificate signed by the CA's key for itself, with exactly `extensions` and nothing else
   * (for tests of how extensions are read: none, twice, a CA flag on a would-be leaf).
   */
  async selfIssued(cn: string, extensions: x509.Extension[]): Promise<X509Certificate> {
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(),
      name: `CN=${cn}`,
      notBefore: new Date(Date.now() - HOUR),
      notAfter: new Date(Date.now() + HOUR),
      signingAlgorithm: ALG,
      keys: this.keys,
      extensions,
    });
    return new X509Certificate(cert.toString('pem'));
  }

  /** A certificate for the gateway: localhost and 127.0.0.1, serverAuth. */
  server(extra: Partial<IssueOptions> = {}): Promise<IssuedCert> {
    return this.issue({
      cn: 'localhost',
      dns: ['localhost'],
      ips: ['127.0.0.1'],
      eku: ['serverAuth'],
      ...extra,
    });
  }

  /** A workload client certificate with a SPIFFE ID (clientAuth). */
  client(spiffeId: string, extra: Partial<IssueOptions> = {}): Promise<IssuedCert> {
    return this.issue({
      cn: spiffeId.split('/').pop() ?? 'client',
      uris: [spiffeId],
      eku: ['clientAuth'],
      ...extra,
    });
  }
}

export const TRUST_DOMAIN = 'prod.example';
export const PAYMENTS_ID = `spiffe://${TRUST_DOMAIN}/ns/payments/sa/api`;
export const ORDERS_ID = `spiffe://${TRUST_DOMAIN}/ns/orders/sa/api`;

/** Everything the TLS tests use, made once per test file. */
export interface TestPki {
  readonly ca: TestCa;
  readonly otherCa: TestCa;
  readonly server: IssuedCert;
  /** Client allowed on the payments routes. */
  readonly payments: IssuedCert;
  /** A valid client with another SPIFFE ID. */
  readonly orders: IssuedCert;
  readonly expired: IssuedCert;
  readonly notYetValid: IssuedCert;
  /** Signed by otherCa. */
  readonly foreign: IssuedCert;
  /** EKU serverAuth only. */
  readonly serverAuthOnly: IssuedCert;
  /** A DNS SAN `x, URI:spiffe://prod.example/ns/admin/sa/root` and a URI SAN with a comma. */
  readonly tricky: IssuedCert;
  /** No SAN at all: identity from the subject. */
  readonly subjectOnly: IssuedCert;
}

export const TRICKY_DNS = `x, URI:spiffe://${TRUST_DOMAIN}/ns/admin/sa/root`;
export const TRICKY_URI = `spiffe://${TRUST_DOMAIN}/ns/pay,ments/sa/x;By=evil`;

export async function createTestPki(): Promise<TestPki> {
  const ca = await TestCa.create();
  const otherCa = await TestCa.create('Other CA');
  const now = Date.now();
  const [server, payments, orders, expired, notYetValid, foreign, serverAuthOnly, tricky, subjectOnly] =
    await Promise.all([
      ca.server(),
      ca.client(PAYMENTS_ID, { subjectExtra: 'O=Example, OU=Payments' }),
      ca.client(ORDERS_ID),
      ca.client(PAYMENTS_ID, { notBefore: new Date(now - 10 * DAY), notAfter: new Date(now - DAY) }),
      ca.client(PAYMENTS_ID, { notBefore: new Date(now + DAY), notAfter: new Date(now + 10 * DAY) }),
      otherCa.client(PAYMENTS_ID),
      ca.client(PAYMENTS_ID, { eku: ['serverAuth'] }),
      ca.issue({ cn: 'tricky', dns: [TRICKY_DNS], uris: [TRICKY_URI], eku: ['clientAuth'] }),
      ca.issue({ cn: 'legacy-client', subjectExtra: 'O=Example', eku: ['clientAuth'] }),
    ]);
  return {
    ca,
    otherCa,
    server,
    payments,
    orders,
    expired,
    notYetValid,
    foreign,
    serverAuthOnly,
    tricky,
    subjectOnly,
  };
}

export interface CertFiles {
  readonly dir: string;
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
}

const written: string[] = [];

/** Write a server cert, its key and a CA bundle into a fresh temporary directory. */
export function writeCertFiles(server: IssuedCert, caBundle: string): CertFiles {
  const dir = mkdtempSync(join(tmpdir(), 'peregrine-tls-'));
  written.push(dir);
  const files = { dir, cert: join(dir, 'tls.crt'), key: join(dir, 'tls.key'), ca: join(dir, 'ca.crt') };
  writeFileSync(files.cert, server.cert);
  writeFileSync(files.key, server.key);
  writeFileSync(files.ca, caBundle);
  return files;
}

/** Replace a file atomically (write a temp file, rename over), as cert-manager and editors do. */
export function replaceAtomically(path: string, content: string): void {
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  writeFileSync(tmp, content);
  renameSync(tmp, path);
}

/** Remove every directory writeCertFiles made (call after the gateways watching them closed). */
export function removeCertFiles(): void {
  for (const dir of written.splice(0)) rmSync(dir, { recursive: true, force: true });
}
