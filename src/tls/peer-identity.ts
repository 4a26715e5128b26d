/**
 * The identity of an mTLS peer, taken once per connection from a *verified* client certificate
 * and cached on the TLS socket; requests on that connection read it from there.
 *
 * Node accepts an unverified client certificate whenever `requestCert` is set without
 * `rejectUnauthorized`; such a peer is never given an identity here (`socket.authorized` must be
 * true). Names come from the certificate's DER (x509-der.ts), never from Node's display string.
 */
import { createHash, type X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { isSpiffeId } from './spiffe.ts';
import { readSubjectAltNames } from './x509-der.ts';

export const kPeerIdentity = Symbol('peregrine.peerIdentity');

export interface PeerIdentity {
  /**
   * The one identity logs, spans and route allow-lists use: the SPIFFE ID if the certificate has a
   * valid one, else its first URI SAN, else its first DNS SAN, else its subject DN.
   */
  readonly id: string;
  readonly spiffeId: string | undefined;
  /** Well-formed URI SANs (whitespace and control characters refused). */
  readonly uris: readonly string[];
  /** Well-formed DNS SANs. */
  readonly dns: readonly string[];
  /** Subject DN in RFC 4514 form (`CN=a,O=b`). */
  readonly subject: string;
  /** SHA-256 of the DER certificate, lower-case hex. */
  readonly sha256: string;
  /** This peer's element of X-Forwarded-Client-Cert. */
  readonly xfcc: string;
}

type IdentitySocket = { [kPeerIdentity]?: PeerIdentity };

const MAX_NAME = 2048;
const URI_RE = /^[A-Za-z][A-Za-z0-9+.-]*:[\x21-\x7e]+$/;
const DNS_RE =
  /^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*$/;

function isUri(s: string): boolean {
  return s.length <= MAX_NAME && URI_RE.test(s);
}

function isDnsName(s: string): boolean {
  return s.length <= 253 && DNS_RE.test(s);
}

/**
 * Node's subject is OpenSSL's multi-line form in certificate order, each value already escaped per
 * RFC 2253 (`,+"\<>;`, control characters as `\XX`); RFC 4514 lists RDNs in reverse order.
 */
function rfc4514(multiline: string): string {
  if (!multiline) return '';
  return multiline.split('\n').reverse().join(',');
}

/** Values in XFCC that contain a separator or quote are sent as quoted strings. */
const NEEDS_QUOTES_RE = /[,;="\\\s]/;

/** Printable ASCII only in a header; other characters become `\XX` escapes of their UTF-8 bytes. */
function asciiEscape(s: string): string {
  if (/^[\x20-\x7e]*$/.test(s)) return s;
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (c >= 0x20 && c <= 0x7e) out += ch;
    else for (const b of Buffer.from(ch, 'utf8')) out += `\\${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function xfccValue(value: string, alwaysQuote = false): string {
  const v = asciiEscape(value);
  if (!alwaysQuote && !NEEDS_QUOTES_RE.test(v)) return v;
  return `"${v.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}

/**
 * One element of X-Forwarded-Client-Cert in Envoy's format:
 * `By=<gateway>;Hash=<sha256 hex>;Subject="<DN>";URI=<uri>;DNS=<name>` (one URI/DNS pair per SAN).
 */
export function formatXfcc(
  by: string | undefined,
  sha256: string,
  subject: string,
  uris: readonly string[],
  dns: readonly string[],
): string {
  let out = by ? `By=${xfccValue(by)};Hash=${sha256}` : `Hash=${sha256}`;
  out += `;Subject=${xfccValue(subject, true)}`;
  for (const u of uris) out += `;URI=${xfccValue(u)}`;
  for (const d of dns) out += `;DNS=${xfccValue(d)}`;
  return out;
}

/**
 * The identity in a certificate (whose chain the caller has verified). Undefined when the
 * certificate cannot be read; malformed names are left out rather than guessed at.
 */
export function identityFromCertificate(
  cert: X509Certificate,
  by: string | undefined,
): PeerIdentity | undefined {
  let names: ReturnType<typeof readSubjectAltNames>;
  try {
    names = readSubjectAltNames(cert.raw);
  } catch {
    return undefined;
  }
  const uris = names.uris.filter(isUri);
  const dns = names.dns.filter(isDnsName);
  const spiffeId = uris.find(isSpiffeId);
  const subject = rfc4514(cert.subject);
  const sha256 = createHash('sha256').update(cert.raw).digest('hex');
  const id = spiffeId ?? uris[0] ?? dns[0] ?? (subject || `sha256:${sha256}`);
  return { id, spiffeId, uris, dns, subject, sha256, xfcc: formatXfcc(by, sha256, subject, uris, dns) };
}

/**
 * Compute and cache the identity of a TLS peer whose certificate chain verified. Returns undefined
 * (and caches nothing) when the peer is not authorized or sent no certificate.
 */
export function attachPeerIdentity(socket: TLSSocket, by: string | undefined): PeerIdentity | undefined {
  if (socket.authorized !== true) return undefined;
  const cert = socket.getPeerX509Certificate();
  if (cert === undefined) return undefined;
  const identity = identityFromCertificate(cert, by);
  if (identity !== undefined) (socket as TLSSocket & IdentitySocket)[kPeerIdentity] = identity;
  return identity;
}

/**
 * The cached identity of a request's connection. `socket` is `req.socket`: the TLS socket for
 * HTTP/1.1, and for HTTP/2 Node's proxy, which forwards property reads to the session's socket.
 */
export function peerIdentityOf(socket: unknown): PeerIdentity | undefined {
  return (socket as IdentitySocket | null | undefined)?.[kPeerIdentity];
}
