/**
 * Test keys and tokens: real ES256/RS256/EdDSA key pairs generated per test run with jose, tokens
 * signed with them, and the attack tokens of the threat catalogue (group E), built by hand where
 * jose would refuse to produce them.
 */
import { createHmac, randomBytes } from 'node:crypto';
import {
  base64url,
  type CryptoKey,
  EncryptJWT,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  generateSecret,
  type JWK,
  SignJWT,
} from 'jose';

export type TestAlg = 'ES256' | 'ES384' | 'RS256' | 'PS256' | 'EdDSA';

export interface TestKey {
  readonly kid: string;
  readonly alg: TestAlg;
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  /** Public JWK with kid, alg and use. */
  readonly jwk: JWK;
  /** SPKI PEM of the public key. */
  readonly pem: string;
}

export function randomKid(): string {
  return randomBytes(6).toString('hex');
}

export async function createTestKey(alg: TestAlg = 'ES256', kid: string = randomKid()): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey, publicKey, jwk, pem: await exportSPKI(publicKey) };
}

export function jwksOf(...keys: (TestKey | JWK)[]): { keys: Record<string, unknown>[] } {
  return {
    keys: keys.map((k) => ('privateKey' in k ? { ...k.jwk } : { ...k })) as Record<string, unknown>[],
  };
}

export interface MintOptions {
  readonly issuer?: string | undefined;
  readonly audience?: string | string[] | undefined;
  readonly subject?: string | undefined;
  /** Seconds from now; default 300. */
  readonly expiresIn?: number;
  /** Absolute `exp` (seconds); null leaves `exp` out. Wins over expiresIn. */
  readonly exp?: number | null;
  readonly nbf?: number;
  readonly iat?: number;
  readonly claims?: Record<string, unknown>;
  /** Extra protected header parameters (typ, crit, jku, ...). */
  readonly header?: Record<string, unknown>;
  /** Override the kid; null leaves it out. */
  readonly kid?: string | null;
  /** Recognised crit parameters for jose's signer (so it agrees to emit them). */
  readonly crit?: Record<string, boolean>;
  /** The clock, seconds since the epoch (default: now). */
  readonly now?: number;
}

export const ISSUER = 'https://idp.test.example/';
export const AUDIENCE = 'orders-api';

/** A token signed by `key`, with iss/aud/sub/exp defaults that a test provider accepts. */
export async function mintToken(key: TestKey, opts: MintOptions = {}): Promise<string> {
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  const payload: Record<string, unknown> = {
    iss: 'issuer' in opts ? opts.issuer : ISSUER,
    aud: 'audience' in opts ? opts.audience : AUDIENCE,
    sub: 'subject' in opts ? opts.subject : 'user-1',
    iat: opts.iat ?? now,
    ...opts.claims,
  };
  if (opts.exp !== null) payload.exp = opts.exp ?? now + (opts.expiresIn ?? 300);
  if (opts.nbf !== undefined) payload.nbf = opts.nbf;
  for (const k of Object.keys(payload)) if (payload[k] === undefined) delete payload[k];
  const kid = opts.kid === null ? undefined : (opts.kid ?? key.kid);
  const header = { alg: key.alg, ...(kid === undefined ? {} : { kid }), ...opts.header };
  return new SignJWT(payload)
    .setProtectedHeader(header)
    .sign(key.privateKey, opts.crit ? { crit: opts.crit } : {});
}

function seg(v: unknown): string {
  return base64url.encode(JSON.stringify(v));
}

/** A compact JWS from raw parts; `signature` is used as given (base64url). */
export function rawToken(
  header: Record<string, unknown>,
  payload: Record<string, unknown>,
  signature = '',
): string {
  return `${seg(header)}.${seg(payload)}.${signature}`;
}

export function defaultPayload(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return { iss: ISSUER, aud: AUDIENCE, sub: 'attacker', iat: now, exp: now + 300, ...overrides };
}

/** `alg: none`, empty signature (RFC 7519 §6.1 unsecured JWT). */
export function algNoneToken(kid?: string): string {
  return rawToken({ alg: 'none', typ: 'JWT', ...(kid ? { kid } : {}) }, defaultPayload());
}

/**
 * The key-confusion attack: HS256 with the RSA public key (its PEM text) as the HMAC secret, and
 * the RSA key's kid, hoping the verifier feeds the public key to HMAC.
 */
export function hs256WithPublicKey(rsa: TestKey): string {
  const signingInput = `${seg({ alg: 'HS256', typ: 'JWT', kid: rsa.kid })}.${seg(defaultPayload())}`;
  const mac = createHmac('sha256', rsa.pem).update(signingInput).digest('base64url');
  return `${signingInput}.${mac}`;
}

/** A real JWE (5 segments), `dir` + A256GCM with a random secret. */
export async function jweToken(): Promise<string> {
  const secret = await generateSecret('A256GCM');
  return new EncryptJWT(defaultPayload()).setProtectedHeader({ alg: 'dir', enc: 'A256GCM' }).encrypt(secret);
}

/** A token signed by the attacker's key that names, or carries, that key in its header. */
export async function selfKeyedToken(
  attacker: TestKey,
  param: 'jwk' | 'jku' | 'x5u' | 'x5c',
  kid: string = attacker.kid,
): Promise<string> {
  const value =
    param === 'jwk'
      ? attacker.jwk
      : param === 'x5c'
        ? ['MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA']
        : 'https://attacker.example/keys.json';
  return mintToken(attacker, { kid, header: { [param]: value } });
}

/** `token` with its payload replaced (signature kept, so it no longer matches). */
export function tamper(token: string, payload: Record<string, unknown>): string {
  const [h, , s] = token.split('.');
  return `${h}.${seg(payload)}.${s}`;
}
