import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  buildKeySet,
  jwksFromPem,
  KeySetError,
  MAX_CANDIDATES,
} from '../../../../src/dataplane/filters/jwt/key-set.ts';
import { createTestKey } from '../../../helpers/tokens.ts';

describe('buildKeySet', () => {
  it('indexes usable keys by alg and kid, skipping encryption, private, weak and disallowed keys', async () => {
    const [es, rsa, ed] = await Promise.all([
      createTestKey('ES256', 'es'),
      createTestKey('RS256', 'rsa'),
      createTestKey('EdDSA', 'ed'),
    ]);
    // jose will not even generate an RSA key under 2048 bits; Node will.
    const weak = {
      ...generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'jwk' }),
      kid: 'weak',
      alg: 'RS256',
    };
    const ks = await buildKeySet(
      {
        keys: [
          es.jwk,
          rsa.jwk,
          { ...es.jwk, kid: 'enc', use: 'enc' },
          { ...es.jwk, kid: 'wrap', key_ops: ['wrapKey'] },
          { ...es.jwk, kid: 'private', d: 'AAAA' },
          { kty: 'oct', k: 'c2VjcmV0', kid: 'hmac' },
          weak,
          ed.jwk, // EdDSA is not in the allow-list
          { ...rsa.jwk, kid: 'ps', alg: 'PS256' }, // alg outside the allow-list
          'not an object',
        ],
      },
      ['ES256', 'RS256'],
    );
    expect(ks.kids).toEqual(['es', 'rsa']);
    expect(ks.size).toBe(2);
    expect(ks.skipped).toBe(8);
    expect(ks.lookup('ES256', 'es')?.map((k) => k.kid)).toEqual(['es']);
    expect(ks.lookup('RS256', 'es')).toBeUndefined();
    expect(ks.lookup('ES256', 'unknown')).toBeUndefined();
    expect(ks.lookup('ES256', 'enc')).toBeUndefined();
    expect(ks.hasKid('rsa')).toBe(true);
    expect(ks.lookup('ES256', undefined)?.map((k) => k.kid)).toEqual(['es']);
  });

  it('imports a JWK without alg for every allowed algorithm its type fits', async () => {
    const rsa = await createTestKey('RS256', 'r');
    const { alg: _alg, ...noAlg } = rsa.jwk;
    const ks = await buildKeySet({ keys: [noAlg] }, ['RS256', 'PS256', 'ES256']);
    expect(ks.lookup('RS256', 'r')).toHaveLength(1);
    expect(ks.lookup('PS256', 'r')).toHaveLength(1);
    expect(ks.lookup('ES256', 'r')).toBeUndefined();
    expect(ks.size).toBe(1);
  });

  it('keeps duplicate kids as candidates, deduplicates identical entries, caps candidates', async () => {
    const keys = await Promise.all(Array.from({ length: 6 }, () => createTestKey('ES256', 'same')));
    const ks = await buildKeySet({ keys: [keys[0]!.jwk, keys[0]!.jwk, ...keys.slice(1).map((k) => k.jwk)] }, [
      'ES256',
    ]);
    expect(ks.kids).toEqual(['same']);
    expect(ks.size).toBe(6);
    expect(ks.lookup('ES256', 'same')).toHaveLength(MAX_CANDIDATES);
  });

  it('keys without kid match any kid the set does not hold', async () => {
    const [a, b] = await Promise.all([createTestKey('ES256', 'a'), createTestKey('ES256', 'b')]);
    const { kid: _kid, ...anonymous } = b.jwk;
    const ks = await buildKeySet({ keys: [a.jwk, anonymous] }, ['ES256']);
    expect(ks.lookup('ES256', 'a')).toHaveLength(1);
    expect(ks.lookup('ES256', 'zzz')?.map((k) => k.kid)).toEqual([undefined]);
  });

  it('throws on a non-JWKS document or one without usable keys', async () => {
    await expect(buildKeySet({ nope: [] }, ['ES256'])).rejects.toBeInstanceOf(KeySetError);
    await expect(buildKeySet(null, ['ES256'])).rejects.toBeInstanceOf(KeySetError);
    const es = await createTestKey('ES256');
    await expect(buildKeySet({ keys: [{ ...es.jwk, use: 'enc' }] }, ['ES256'])).rejects.toThrow(
      'no usable verification key in the JWKS',
    );
  });

  it('converts PEM public keys with optional kids', async () => {
    const es = await createTestKey('ES256');
    const doc = jwksFromPem([es.pem, { kid: 'named', pem: es.pem }]);
    expect(doc.keys.map((k) => k.kid)).toEqual([undefined, 'named']);
    const ks = await buildKeySet(doc, ['ES256']);
    expect(ks.size).toBe(1);
    expect(ks.lookup('ES256', 'named')).toHaveLength(1);
  });
});
