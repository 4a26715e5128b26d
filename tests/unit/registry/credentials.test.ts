import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CredentialLoadError,
  Credentials,
  compileServicePatterns,
} from '../../../src/registry/credentials.ts';
import { RegistrySchema } from '../../../src/registry/schema.ts';
import type { PeerIdentity } from '../../../src/tls/peer-identity.ts';

const TOKEN = 'a-long-enough-token-0123456789';
const peer = (spiffeId: string | undefined): PeerIdentity =>
  ({
    id: spiffeId ?? 'CN=x',
    spiffeId,
    uris: [],
    dns: [],
    subject: 'CN=x',
    sha256: '',
    xfcc: '',
  }) as PeerIdentity;

function credentials(cfg: unknown, env: NodeJS.ProcessEnv = { T: TOKEN }): Credentials {
  return new Credentials(RegistrySchema.parse({ credentials: cfg }).credentials, env);
}

describe('service patterns', () => {
  it('match names exactly, or with * for any run of name characters', () => {
    const may = compileServicePatterns(['payments', 'orders-*', '*-canary']);
    expect(['payments', 'orders-eu', 'orders-', 'web-canary'].map(may)).toEqual([true, true, true, true]);
    expect(['payment', 'paymentsx', 'xorders-eu', 'orders.eu'].map(may)).toEqual([
      false,
      false,
      false,
      false,
    ]);
    expect(compileServicePatterns(['a.b'])('axb')).toBe(false);
    expect(compileServicePatterns(['*'])('anything-at-all')).toBe(true);
  });
});

describe('Credentials', () => {
  it('an identity pattern with {service} allows exactly that service', () => {
    const c = credentials({ identities: [{ spiffe: 'spiffe://prod.example/ns/*/sa/{service}' }] });
    const auth = c.authenticate(peer('spiffe://prod.example/ns/shop/sa/payments'), undefined);
    expect(auth.ok).toBe(true);
    if (!auth.ok) return;
    expect(auth.credential.principal).toBe('spiffe://prod.example/ns/shop/sa/payments');
    expect(auth.credential.mayRegister('payments')).toBe(true);
    expect(auth.credential.mayRegister('orders')).toBe(false);
  });

  it('* matches one segment only, and the trust domain exactly', () => {
    const c = credentials({ identities: [{ spiffe: 'spiffe://prod.example/ns/*/sa/{service}' }] });
    for (const id of [
      'spiffe://prod.example/ns/a/b/sa/payments',
      'spiffe://prodxexample/ns/a/sa/payments',
      'spiffe://evil.prod.example/ns/a/sa/payments',
      'spiffe://prod.example/ns/a/sa/payments/extra',
      'spiffe://prod.example/ns/a/sa/Payments',
    ]) {
      expect(c.authenticate(peer(id), undefined), id).toMatchObject({ ok: false, reason: 'bad_credential' });
    }
  });

  it('an identity pattern without {service} allows its listed services', () => {
    const c = credentials({
      identities: [
        { spiffe: 'spiffe://prod.example/ns/platform/sa/deployer', services: ['payments', 'orders-*'] },
      ],
    });
    const auth = c.authenticate(peer('spiffe://prod.example/ns/platform/sa/deployer'), undefined);
    expect(auth.ok && auth.credential.mayRegister('orders-eu')).toBe(true);
    expect(auth.ok && auth.credential.mayRegister('users')).toBe(false);
  });

  it('tokens: from env or file, compared by digest, scoped to their services', () => {
    const dir = mkdtempSync(join(tmpdir(), 'peregrine-cred-'));
    const file = join(dir, 'token');
    writeFileSync(file, '  file-token-0123456789abcdef\n');
    const c = credentials({
      tokens: [
        { name: 'env', env: 'T', services: ['payments'] },
        { name: 'file', file, services: ['users'] },
      ],
    });
    const fromEnv = c.authenticate(undefined, `Bearer ${TOKEN}`);
    expect(fromEnv.ok && fromEnv.credential.principal).toBe('token:env');
    expect(fromEnv.ok && fromEnv.credential.mayRegister('payments')).toBe(true);
    expect(fromEnv.ok && fromEnv.credential.mayRegister('users')).toBe(false);
    const fromFile = c.authenticate(undefined, 'bearer file-token-0123456789abcdef');
    expect(fromFile.ok && fromFile.credential.principal).toBe('token:file');
    expect(c.authenticate(undefined, `Bearer ${TOKEN}x`)).toMatchObject({
      ok: false,
      reason: 'bad_credential',
    });
    expect(c.authenticate(undefined, `Basic ${TOKEN}`)).toMatchObject({
      ok: false,
      reason: 'bad_credential',
    });
    expect(c.authenticate(undefined, `Bearer ${'x'.repeat(10_000)}`)).toMatchObject({ ok: false });
    expect(c.authenticate(undefined, undefined)).toMatchObject({ ok: false, reason: 'no_credential' });
  });

  it('a matching identity wins over a token; an unmatched identity falls back to the token', () => {
    const c = credentials({
      identities: [{ spiffe: 'spiffe://prod.example/ns/*/sa/{service}' }],
      tokens: [{ name: 'env', env: 'T', services: ['users'] }],
    });
    const both = c.authenticate(peer('spiffe://prod.example/ns/x/sa/payments'), `Bearer ${TOKEN}`);
    expect(both.ok && both.credential.kind).toBe('identity');
    const other = c.authenticate(peer('spiffe://other.example/x'), `Bearer ${TOKEN}`);
    expect(other.ok && other.credential.kind).toBe('token');
    // A certificate without a SPIFFE ID is no registry identity.
    expect(c.authenticate(peer(undefined), undefined)).toMatchObject({ ok: false, reason: 'bad_credential' });
  });

  it('refuses at start: a missing variable, an unreadable file, a short or shared token', () => {
    const load = (tokens: unknown[], env: NodeJS.ProcessEnv) => () => credentials({ tokens }, env);
    expect(load([{ name: 'a', env: 'NOPE', services: ['x'] }], {})).toThrow(/NOPE is not set/);
    expect(load([{ name: 'a', file: '/nonexistent/token', services: ['x'] }], {})).toThrow(/cannot read/);
    expect(load([{ name: 'a', env: 'S', services: ['x'] }], { S: 'short' })).toThrow(CredentialLoadError);
    expect(
      load(
        [
          { name: 'a', env: 'T', services: ['x'] },
          { name: 'b', env: 'T', services: ['y'] },
        ],
        { T: TOKEN },
      ),
    ).toThrow(/same token/);
  });
});
