import 'reflect-metadata';
import { X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { beforeAll, describe, expect, it } from 'vitest';
import { identityFromCertificate } from '../../../src/tls/peer-identity.ts';
import { DerError, readCertificateFacts, readSubjectAltNames } from '../../../src/tls/x509-der.ts';
import {
  createTestPki,
  PAYMENTS_ID,
  type TestCa,
  type TestPki,
  TRICKY_DNS,
  TRICKY_URI,
} from '../../helpers/certs.ts';

let pki: TestPki;
let ca: TestCa;

beforeAll(async () => {
  pki = await createTestPki();
  ca = pki.ca;
});

describe('readSubjectAltNames', () => {
  it('reads DNS, IP and URI names, as @peculiar/x509 does', async () => {
    const cert = await ca.issue({
      cn: 'multi',
      dns: ['a.example', '*.b.example'],
      ips: ['127.0.0.1', '2001:db8::1'],
      uris: ['spiffe://prod.example/ns/a/sa/b', 'https://example.com/x'],
    });
    const names = readSubjectAltNames(cert.x509.raw);
    expect(names.dns).toEqual(['a.example', '*.b.example']);
    expect(names.uris).toEqual(['spiffe://prod.example/ns/a/sa/b', 'https://example.com/x']);
    expect(names.ips).toEqual(['127.0.0.1', '2001:db8:0:0:0:0:0:1']);
    const reference = new x509.X509Certificate(cert.cert).getExtension(x509.SubjectAlternativeNameExtension)!;
    const json = reference.names.toJSON();
    expect(json.filter((n) => n.type === 'dns').map((n) => n.value)).toEqual(names.dns);
    expect(json.filter((n) => n.type === 'url').map((n) => n.value)).toEqual(names.uris);
  });

  it('is not fooled by names that look like several entries', () => {
    const names = readSubjectAltNames(pki.tricky.x509.raw);
    expect(names.dns).toEqual([TRICKY_DNS]);
    expect(names.uris).toEqual([TRICKY_URI]);
    // Node's display string: entries with separators are quoted and escaped, so it cannot be
    // split on ", " (and before Node 17 it was not quoted at all).
    expect(pki.tricky.x509.subjectAltName).toContain('\\u002c');
    // Rendered the way Node did before quoting, a naive split would find an admin URI SAN.
    const legacy = `DNS:${TRICKY_DNS}, URI:${TRICKY_URI}`;
    expect(legacy.split(', ')).toContain('URI:spiffe://prod.example/ns/admin/sa/root');
    expect(names.uris).not.toContain('spiffe://prod.example/ns/admin/sa/root');
  });

  it('returns empty lists for a certificate without the extension', () => {
    expect(readSubjectAltNames(pki.subjectOnly.x509.raw)).toEqual({ dns: [], uris: [], ips: [], emails: [] });
  });

  it('throws DerError, and only DerError, on truncated or corrupted input', () => {
    const raw = pki.payments.x509.raw;
    expect(() => readSubjectAltNames(raw.subarray(0, 100))).toThrow(DerError);
    expect(() => readSubjectAltNames(Buffer.alloc(0))).toThrow(DerError);
    let seed = 42;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let i = 0; i < 2000; i++) {
      const copy = Buffer.from(raw);
      for (let k = 0; k < 3; k++) copy[rand(copy.length)] = rand(256);
      try {
        readSubjectAltNames(copy);
      } catch (err) {
        expect(err).toBeInstanceOf(DerError);
      }
    }
  });
});

describe('readCertificateFacts', () => {
  it('reads basicConstraints cA and keyUsage of a leaf and of a CA, as Node does', () => {
    const leaf = readCertificateFacts(pki.payments.x509.raw);
    expect(leaf.ca).toBe(false);
    expect(leaf.keyUsage).toEqual({ digitalSignature: true, keyCertSign: false, crlSign: false });
    expect(leaf.sans.uris).toEqual([PAYMENTS_ID]);
    const caCert = new X509Certificate(ca.cert);
    const facts = readCertificateFacts(caCert.raw);
    expect(facts.ca).toBe(caCert.ca);
    expect(facts).toMatchObject({
      ca: true,
      keyUsage: { digitalSignature: false, keyCertSign: true, crlSign: true },
    });
  });

  it('without the extensions: not a CA, no key usage', async () => {
    const bare = await ca.selfIssued('bare', []);
    expect(readCertificateFacts(bare.raw)).toEqual({
      sans: { dns: [], uris: [], ips: [], emails: [] },
      ca: false,
      keyUsage: undefined,
    });
  });

  it('refuses an extension that appears twice', async () => {
    const twice = await ca.selfIssued('twice', [
      new x509.BasicConstraintsExtension(false),
      new x509.BasicConstraintsExtension(true),
    ]);
    expect(() => readCertificateFacts(twice.raw)).toThrow(/more than one basicConstraints/);
  });
});

describe('identityFromCertificate', () => {
  it('prefers the SPIFFE ID and builds the XFCC element', () => {
    const id = identityFromCertificate(pki.payments.x509, 'spiffe://prod.example/gateway')!;
    expect(id.id).toBe(PAYMENTS_ID);
    expect(id.spiffeId).toBe(PAYMENTS_ID);
    expect(id.sha256).toBe(pki.payments.sha256);
    const subject = pki.payments.x509.subject.split('\n').reverse().join(',');
    expect(id.subject).toBe(subject);
    expect(id.xfcc).toBe(
      `By=spiffe://prod.example/gateway;Hash=${pki.payments.sha256};Subject="${subject}";URI=${PAYMENTS_ID}`,
    );
  });

  it('does not take a malformed SPIFFE ID as one, and quotes values with separators', async () => {
    const cert = await ca.issue({
      cn: 'dots',
      uris: ['spiffe://prod.example/ns/../admin', 'spiffe://Prod.Example/x'],
      dns: ['svc.internal', 'bad name'],
    });
    const id = identityFromCertificate(new X509Certificate(cert.cert), undefined)!;
    expect(id.spiffeId).toBeUndefined();
    expect(id.id).toBe('spiffe://prod.example/ns/../admin');
    expect(id.dns).toEqual(['svc.internal']);
    expect(id.xfcc.startsWith('Hash=')).toBe(true);
    const tricky = identityFromCertificate(pki.tricky.x509, 'edge')!;
    expect(tricky.xfcc).toBe(`By=edge;Hash=${pki.tricky.sha256};Subject="CN=tricky";URI="${TRICKY_URI}"`);
  });

  it('falls back to the DNS name, then the subject', async () => {
    const dnsOnly = await ca.issue({ cn: 'svc', dns: ['svc.internal'] });
    expect(identityFromCertificate(dnsOnly.x509, undefined)!.id).toBe('svc.internal');
    expect(identityFromCertificate(pki.subjectOnly.x509, undefined)!.id).toBe(
      pki.subjectOnly.x509.subject.split('\n').reverse().join(','),
    );
  });
});
