/**
 * The extensions of an X.509 certificate that identities depend on, read from its DER bytes:
 * subjectAltName, basicConstraints and keyUsage.
 *
 * Node offers SANs only as one display string (`X509Certificate#subjectAltName`,
 * `DNS:a, URI:b`), whose quoting rules changed across releases (CVE-2021-44532); splitting it lets
 * a crafted entry such as a DNS name `x, URI:spiffe://evil` pose as a second entry. So identities
 * are read structurally here: Certificate → TBSCertificate → extensions [3] → the extension by OID
 * (RFC 5280 §4.2.1.6 GeneralNames, §4.2.1.9 BasicConstraints, §4.2.1.3 KeyUsage). Only the
 * certificate of a peer whose chain OpenSSL already verified is ever parsed; every length is still
 * bounds-checked, and anything unexpected throws rather than guesses.
 */

export interface SubjectAltNames {
  readonly dns: readonly string[];
  readonly uris: readonly string[];
  readonly ips: readonly string[];
  readonly emails: readonly string[];
}

/** A DER value: its tag and where its content starts and ends in the buffer. */
interface Tlv {
  readonly tag: number;
  readonly start: number;
  readonly end: number;
}

const SEQUENCE = 0x30;
const OID = 0x06;
const BOOLEAN = 0x01;
const INTEGER = 0x02;
const BIT_STRING = 0x03;
const OCTET_STRING = 0x04;
const EXTENSIONS = 0xa3; // [3] EXPLICIT, constructed
// GeneralName alternatives are IMPLICIT context-specific tags.
const GN_EMAIL = 0x81;
const GN_DNS = 0x82;
const GN_URI = 0x86;
const GN_IP = 0x87;
/** 2.5.29.17, subjectAltName; 2.5.29.19, basicConstraints; 2.5.29.15, keyUsage. */
const SAN_OID = 0x11;
const BASIC_CONSTRAINTS_OID = 0x13;
const KEY_USAGE_OID = 0x0f;
/** KeyUsage bits as they sit in the BIT STRING's first content byte (bit 0 is 0x80). */
const KU_DIGITAL_SIGNATURE = 0x80;
const KU_KEY_CERT_SIGN = 0x04;
const KU_CRL_SIGN = 0x02;

export class DerError extends Error {
  constructor(message: string) {
    super(`certificate DER: ${message}`);
    this.name = 'DerError';
  }
}

function readTlv(buf: Uint8Array, pos: number, limit: number): Tlv {
  if (pos + 2 > limit) throw new DerError('truncated value');
  const tag = buf[pos]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError('high tag numbers are not used in certificates');
  let len = buf[pos + 1]!;
  let p = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    // 0 would be BER's indefinite length, which DER forbids; 4 bytes is far beyond any certificate.
    if (n === 0 || n > 4) throw new DerError('unsupported length form');
    if (p + n > limit) throw new DerError('truncated length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p++]!;
  }
  if (p + len > limit) throw new DerError('value runs past its container');
  return { tag, start: p, end: p + len };
}

function expect(tlv: Tlv, tag: number, what: string): Tlv {
  if (tlv.tag !== tag) throw new DerError(`expected ${what}`);
  return tlv;
}

/** The last byte of a 2.5.29.x (id-ce) extension OID, or -1 for any other OID. */
function idCe(buf: Uint8Array, oid: Tlv): number {
  if (oid.end - oid.start !== 3 || buf[oid.start] !== 0x55 || buf[oid.start + 1] !== 0x1d) return -1;
  return buf[oid.start + 2]!;
}

/** IA5String content: 7-bit. Anything else is refused rather than re-interpreted. */
function ia5(buf: Uint8Array, tlv: Tlv): string {
  for (let i = tlv.start; i < tlv.end; i++) {
    if (buf[i]! > 0x7f) throw new DerError('non-ASCII byte in an IA5String name');
  }
  return Buffer.from(buf.buffer, buf.byteOffset + tlv.start, tlv.end - tlv.start).toString('latin1');
}

function ipString(buf: Uint8Array, tlv: Tlv): string {
  const b = buf.subarray(tlv.start, tlv.end);
  if (b.length === 4) return b.join('.');
  if (b.length === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16));
    return groups.join(':');
  }
  throw new DerError('iPAddress must be 4 or 16 bytes');
}

/** The extension value (an OCTET STRING's content) of subjectAltName: GeneralNames. */
function readGeneralNames(buf: Uint8Array, value: Tlv): SubjectAltNames {
  const dns: string[] = [];
  const uris: string[] = [];
  const ips: string[] = [];
  const emails: string[] = [];
  const seq = expect(readTlv(buf, value.start, value.end), SEQUENCE, 'GeneralNames');
  if (seq.end !== value.end) throw new DerError('trailing bytes after GeneralNames');
  for (let p = seq.start; p < seq.end; ) {
    const name = readTlv(buf, p, seq.end);
    p = name.end;
    switch (name.tag) {
      case GN_DNS:
        dns.push(ia5(buf, name));
        break;
      case GN_URI:
        uris.push(ia5(buf, name));
        break;
      case GN_EMAIL:
        emails.push(ia5(buf, name));
        break;
      case GN_IP:
        ips.push(ipString(buf, name));
        break;
      default:
      // otherName, directoryName, registeredID, ...: not identities the gateway uses.
    }
  }
  return { dns, uris, ips, emails };
}

const EMPTY: SubjectAltNames = Object.freeze({ dns: [], uris: [], ips: [], emails: [] });

/** What a certificate's extensions say about it. */
export interface CertificateFacts {
  readonly sans: SubjectAltNames;
  /** basicConstraints cA (false when the extension is absent). */
  readonly ca: boolean;
  /** keyUsage, undefined when the extension is absent. */
  readonly keyUsage:
    | { readonly digitalSignature: boolean; readonly keyCertSign: boolean; readonly crlSign: boolean }
    | undefined;
}

/** BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER OPTIONAL } */
function readBasicConstraints(buf: Uint8Array, value: Tlv): boolean {
  const seq = expect(readTlv(buf, value.start, value.end), SEQUENCE, 'BasicConstraints');
  if (seq.start === seq.end) return false;
  const first = readTlv(buf, seq.start, seq.end);
  if (first.tag === INTEGER) return false;
  expect(first, BOOLEAN, 'cA');
  if (first.end - first.start !== 1) throw new DerError('cA must be one byte');
  return buf[first.start] !== 0;
}

/** KeyUsage ::= BIT STRING: the first content byte counts unused bits, then the bits. */
function readKeyUsage(buf: Uint8Array, value: Tlv): NonNullable<CertificateFacts['keyUsage']> {
  const bits = expect(readTlv(buf, value.start, value.end), BIT_STRING, 'KeyUsage');
  const first = bits.end - bits.start > 1 ? buf[bits.start + 1]! : 0;
  return {
    digitalSignature: (first & KU_DIGITAL_SIGNATURE) !== 0,
    keyCertSign: (first & KU_KEY_CERT_SIGN) !== 0,
    crlSign: (first & KU_CRL_SIGN) !== 0,
  };
}

/**
 * Read subjectAltName, basicConstraints and keyUsage of a DER certificate (`X509Certificate#raw`).
 * Throws DerError on malformed input or on an extension that appears twice (RFC 5280 §4.2: an
 * extension appears at most once).
 */
export function readCertificateFacts(der: Uint8Array): CertificateFacts {
  const cert = expect(readTlv(der, 0, der.length), SEQUENCE, 'Certificate');
  const tbs = expect(readTlv(der, cert.start, cert.end), SEQUENCE, 'TBSCertificate');
  let sans: SubjectAltNames | undefined;
  let ca: boolean | undefined;
  let keyUsage: CertificateFacts['keyUsage'];
  for (let p = tbs.start; p < tbs.end; ) {
    const field = readTlv(der, p, tbs.end);
    p = field.end;
    if (field.tag !== EXTENSIONS) continue;
    const list = expect(readTlv(der, field.start, field.end), SEQUENCE, 'Extensions');
    for (let q = list.start; q < list.end; ) {
      const ext = expect(readTlv(der, q, list.end), SEQUENCE, 'Extension');
      q = ext.end;
      const oid = expect(readTlv(der, ext.start, ext.end), OID, 'extnID');
      let next = readTlv(der, oid.end, ext.end);
      if (next.tag === BOOLEAN) next = readTlv(der, next.end, ext.end);
      const value = expect(next, OCTET_STRING, 'extnValue');
      switch (idCe(der, oid)) {
        case SAN_OID:
          if (sans) throw new DerError('more than one subjectAltName extension');
          sans = readGeneralNames(der, value);
          break;
        case BASIC_CONSTRAINTS_OID:
          if (ca !== undefined) throw new DerError('more than one basicConstraints extension');
          ca = readBasicConstraints(der, value);
          break;
        case KEY_USAGE_OID:
          if (keyUsage) throw new DerError('more than one keyUsage extension');
          keyUsage = readKeyUsage(der, value);
          break;
        default:
      }
    }
  }
  return { sans: sans ?? EMPTY, ca: ca ?? false, keyUsage };
}

/**
 * Read the subjectAltName extension of a DER certificate (`X509Certificate#raw`). A certificate
 * without one yields empty lists. Throws DerError on malformed input (readCertificateFacts).
 */
export function readSubjectAltNames(der: Uint8Array): SubjectAltNames {
  return readCertificateFacts(der).sans;
}
