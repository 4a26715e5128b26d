import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { beforeAll, describe, expect, it } from 'vitest';
import { expectedIdentity } from '../../../src/tls/spiffe.ts';
import { PeerIdentityError, svidServerCheck, verifySvid } from '../../../src/tls/svid.ts';
import { TestCa } from '../../helpers/certs.ts';

const ORDERS = 'spiffe://prod.example/ns/shop/sa/orders';
const expected = expectedIdentity({ expect: [ORDERS] }, 'orders');
let ca: TestCa;

beforeAll(async () => {
  ca = await TestCa.create();
});

function problemOf(result: string | PeerIdentityError): [string, string] | string {
  return typeof result === 'string' ? result : [result.reason, result.message];
}

describe('verifySvid (X509-SVID §5)', () => {
  it('accepts a leaf with exactly one expected SPIFFE ID (other SANs may be there too)', async () => {
    const leaf = await ca.issue({ cn: 'orders', uris: [ORDERS], dns: ['orders.internal'] });
    expect(verifySvid(leaf.x509.raw, expected)).toBe(ORDERS);
  });

  it.each([
    [
      'another SPIFFE ID',
      { uris: ['spiffe://prod.example/ns/shop/sa/payments'] },
      'identity_mismatch',
      'unexpected SPIFFE ID',
    ],
    [
      'the ID in another trust domain',
      { uris: ['spiffe://other.example/ns/shop/sa/orders'] },
      'identity_mismatch',
      'unexpected SPIFFE ID',
    ],
    ['no URI SAN, the ID as a DNS SAN', { dns: [ORDERS] }, 'not_svid', 'no URI SAN (no SPIFFE ID)'],
    [
      'two URI SANs',
      { uris: [ORDERS, 'spiffe://prod.example/x'] },
      'not_svid',
      '2 URI SANs (an SVID has one)',
    ],
    [
      'a URI SAN that is not a SPIFFE ID',
      { uris: ['https://prod.example/ns/shop/sa/orders'] },
      'not_svid',
      'the URI SAN is not a SPIFFE ID with a path',
    ],
    [
      'a SPIFFE ID without a path',
      { uris: ['spiffe://prod.example'] },
      'not_svid',
      'the URI SAN is not a SPIFFE ID with a path',
    ],
  ])('refuses %s', async (_what, names, reason, problem) => {
    const cert = await ca.issue({ cn: 'x', ...names });
    expect(problemOf(verifySvid(cert.x509.raw, expected))).toEqual([reason, problem]);
  });

  it('refuses a CA certificate and a leaf that may sign certificates, even with the expected ID', async () => {
    const san = new x509.SubjectAlternativeNameExtension([{ type: 'url', value: ORDERS }]);
    const caCert = await ca.selfIssued('ca', [san, new x509.BasicConstraintsExtension(true, 0, true)]);
    const signer = await ca.selfIssued('signer', [
      san,
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign, true),
    ]);
    expect(problemOf(verifySvid(caCert.raw, expected))).toEqual([
      'not_svid',
      'a CA certificate is not a leaf SVID',
    ]);
    expect(problemOf(verifySvid(signer.raw, expected))).toEqual([
      'not_svid',
      'a leaf SVID may not sign certificates or CRLs',
    ]);
  });

  it('refuses garbage rather than guessing, and says what it saw and expected', () => {
    const result = verifySvid(Buffer.from([0x30, 0x03, 0x02, 0x01]), expected);
    expect(result).toBeInstanceOf(PeerIdentityError);
    expect(result).toMatchObject({ reason: 'not_svid', seen: [], expected: [ORDERS] });
  });

  it('svidServerCheck is a checkServerIdentity that ignores the host name', async () => {
    const leaf = await ca.issue({ cn: 'orders', uris: [ORDERS] });
    const check = svidServerCheck(expected);
    const peer = { raw: leaf.x509.raw } as Parameters<typeof check>[1];
    expect(check('some.other.host', peer)).toBeUndefined();
    const other = await ca.issue({
      cn: 'x',
      uris: ['spiffe://prod.example/ns/shop/sa/payments'],
      dns: ['some.other.host'],
    });
    expect(check('some.other.host', { raw: other.x509.raw } as Parameters<typeof check>[1])).toMatchObject({
      code: 'ERR_PEREGRINE_PEER_IDENTITY',
      reason: 'identity_mismatch',
      seen: ['spiffe://prod.example/ns/shop/sa/payments'],
    });
  });
});
