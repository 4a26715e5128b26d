/**
 * A development certificate authority for a mesh: a CA whose certificate carries its trust
 * domain's SPIFFE ID, and leaf X.509-SVIDs for services (`spiffe://<td>/ns/<ns>/sa/<service>`,
 * serverAuth and clientAuth, so one certificate serves a sidecar's inbound and outbound sides).
 * Not for production: docs/mesh.md says where production certificates come from.
 *
 * node:crypto parses certificates but cannot make them, so they are built with @peculiar/x509
 * (loaded only by `peregrine certs`, never by the gateway).
 */
import 'reflect-metadata';
import { createPrivateKey, KeyObject, webcrypto, X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { parseSpiffeId } from './spiffe.ts';
import { readCertificateFacts } from './x509-der.ts';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type CryptoKey = webcrypto.CryptoKey;
type SigningAlgorithm =
  | { name: 'ECDSA'; namedCurve: string; hash: string }
  | { name: 'RSASSA-PKCS1-v1_5'; hash: string };

const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
/** Certificates start a little in the past, for clocks that run behind. */
const BACKDATE_MS = 5 * 60_000;

export interface PemPair {
  readonly cert: string;
  readonly key: string;
}

/** A loaded CA: what `issueSvid` signs with. */
export interface DevCa {
  readonly certificate: X509Certificate;
  /** Its certificate, PEM (the trust bundle handed out with each leaf). */
  readonly pem: string;
  /** The trust domain of the CA's SPIFFE ID (its URI SAN), if it has one. */
  readonly trustDomain: string | undefined;
  readonly signingKey: CryptoKey;
  readonly algorithm: SigningAlgorithm;
}

/** Bad input or an unusable CA: the message says what and where. */
export class DevCaError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DevCaError';
  }
}

function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0]! &= 0x7f; // a positive INTEGER
  bytes[0]! |= 0x10; // no leading zero byte to strip
  return Buffer.from(bytes).toString('hex');
}

function keyPem(key: CryptoKey): string {
  return KeyObject.from(key).export({ type: 'pkcs8', format: 'pem' }) as string;
}

async function newKeys(): Promise<webcrypto.CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
}

/** A self-signed CA for `trustDomain`, valid for `ttlMs` from `now`. */
export async function createDevCa(trustDomain: string, ttlMs: number, now = Date.now()): Promise<PemPair> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `CN=Peregrine development CA, O=${trustDomain}`,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + ttlMs),
    signingAlgorithm: EC_P256,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      // A signing certificate SHOULD be an SVID of its trust domain, without a path (X509-SVID §3.2).
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${trustDomain}` }]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: `${cert.toString('pem')}\n`, key: keyPem(keys.privateKey) };
}

const CURVES: Readonly<Record<string, { namedCurve: string; hash: string }>> = {
  prime256v1: { namedCurve: 'P-256', hash: 'SHA-256' },
  secp384r1: { namedCurve: 'P-384', hash: 'SHA-384' },
};

function signingAlgorithm(key: KeyObject, file: string): SigningAlgorithm {
  if (key.asymmetricKeyType === 'rsa') return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  const curve =
    key.asymmetricKeyType === 'ec' ? CURVES[key.asymmetricKeyDetails?.namedCurve ?? ''] : undefined;
  if (curve === undefined) throw new DevCaError(`${file}: the CA key must be RSA, or EC on P-256 or P-384`);
  return { name: 'ECDSA', ...curve };
}

/**
 * A CA from its certificate and key (PEM): the key must match the certificate, which must be a
 * CA that may sign certificates and has not expired.
 */
export async function loadDevCa(
  certPem: string,
  keyPemText: string,
  files: { cert: string; key: string },
  now = Date.now(),
): Promise<DevCa> {
  let certificate: X509Certificate;
  let key: KeyObject;
  try {
    certificate = new X509Certificate(certPem);
  } catch {
    throw new DevCaError(`${files.cert}: not a PEM certificate`);
  }
  try {
    key = createPrivateKey(keyPemText);
  } catch {
    throw new DevCaError(`${files.key}: not a PEM private key (encrypted keys are not supported)`);
  }
  if (!certificate.checkPrivateKey(key)) throw new DevCaError(`${files.key} does not match ${files.cert}`);
  const facts = readCertificateFacts(certificate.raw);
  if (!facts.ca || facts.keyUsage?.keyCertSign === false)
    throw new DevCaError(`${files.cert} is not a CA certificate that may sign certificates`);
  if (certificate.validToDate.getTime() <= now)
    throw new DevCaError(`${files.cert} expired at ${certificate.validToDate.toISOString()}`);
  const algorithm = signingAlgorithm(key, files.key);
  const importAs =
    algorithm.name === 'ECDSA' ? { name: 'ECDSA', namedCurve: algorithm.namedCurve } : algorithm;
  const signingKey = key.toCryptoKey(importAs, false, ['sign']);
  const trustDomain = facts.sans.uris
    .map(parseSpiffeId)
    .find((id) => id !== undefined && id.path === '')?.trustDomain;
  return { certificate, pem: certPem, trustDomain, signingKey, algorithm };
}

export interface SvidRequest {
  readonly spiffeId: string;
  /** Subject common name (the service's name). */
  readonly commonName: string;
  readonly ttlMs: number;
  /** Extra DNS names, for clients that check a host name rather than a SPIFFE ID. */
  readonly dns?: readonly string[] | undefined;
}

/**
 * A leaf X.509-SVID signed by `ca`: exactly one URI SAN (the SPIFFE ID), not a CA, digitalSignature
 * only, EKU serverAuth and clientAuth (X509-SVID §4). A fresh ECDSA P-256 key each time.
 */
export async function issueSvid(ca: DevCa, req: SvidRequest, now = Date.now()): Promise<PemPair> {
  const notAfter = now + req.ttlMs;
  if (notAfter > ca.certificate.validToDate.getTime())
    throw new DevCaError(
      `the certificate would outlive its CA (which expires at ${ca.certificate.validToDate.toISOString()}); use a shorter --ttl or a new CA`,
    );
  const keys = await newKeys();
  const caCert = new x509.X509Certificate(ca.certificate.raw);
  const names: x509.JsonGeneralName[] = [
    { type: 'url', value: req.spiffeId },
    ...(req.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
  ];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: `CN=${req.commonName}`,
    issuer: caCert.subject,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(notAfter),
    signingAlgorithm: ca.algorithm,
    publicKey: keys.publicKey,
    signingKey: ca.signingKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([
        x509.ExtendedKeyUsage.serverAuth,
        x509.ExtendedKeyUsage.clientAuth,
      ]),
      new x509.SubjectAlternativeNameExtension(names),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  return { cert: `${cert.toString('pem')}\n`, key: keyPem(keys.privateKey) };
}
