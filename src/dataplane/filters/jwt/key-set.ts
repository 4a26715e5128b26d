/**
 * A provider's verification keys, imported once when the key set is built and indexed by
 * (alg, kid), so a request finds its candidate keys with two Map lookups.
 *
 * Why not jose's createLocalJWKSet: it selects and imports keys on the first token that names
 * them, throws on duplicate kids, and keeps no index by kid that the token cache can use to drop
 * verifications made with a key that left the set. Here:
 * - keys with `use` other than `sig`, `key_ops` without `verify`, private or symmetric material,
 *   unsupported types, an `alg` outside the provider's allow-list, or RSA under 2048 bits are
 *   skipped (counted in `skipped`);
 * - a JWK without `alg` is imported once per allowed algorithm its type fits;
 * - duplicate kids are kept (the same kid on an RSA and an EC key is common during migrations);
 *   a token tries each candidate in document order, at most MAX_CANDIDATES;
 * - keys without `kid` match tokens whose kid the set does not hold, and tokens without a kid
 *   try every key of their algorithm (again at most MAX_CANDIDATES).
 */
import { createPublicKey, X509Certificate } from 'node:crypto';
import { type CryptoKey, importJWK, type JWK } from 'jose';
import type { JwtAlgorithm } from './schema.ts';

/** Most keys of one JWKS document considered; the rest are skipped. */
export const MAX_KEYS = 100;
/** Most keys one token is tried against (duplicate kids, or no kid). Bounds CPU per bad token. */
export const MAX_CANDIDATES = 4;

export interface VerificationKey {
  readonly kid: string | undefined;
  readonly alg: JwtAlgorithm;
  readonly key: CryptoKey;
  /** Identity of the key material (type, curve, public parameters), independent of kid and alg. */
  readonly fingerprint: string;
}

interface AlgKeys {
  readonly byKid: Map<string, VerificationKey[]>;
  readonly noKid: VerificationKey[];
  /** Every key of the algorithm in document order, capped at MAX_CANDIDATES (tokens without kid). */
  readonly all: VerificationKey[];
}

const KEY_TYPES: Readonly<Record<JwtAlgorithm, { kty: string; crv?: string }>> = {
  RS256: { kty: 'RSA' },
  RS384: { kty: 'RSA' },
  RS512: { kty: 'RSA' },
  PS256: { kty: 'RSA' },
  PS384: { kty: 'RSA' },
  PS512: { kty: 'RSA' },
  ES256: { kty: 'EC', crv: 'P-256' },
  ES384: { kty: 'EC', crv: 'P-384' },
  ES512: { kty: 'EC', crv: 'P-521' },
  EdDSA: { kty: 'OKP', crv: 'Ed25519' },
  Ed25519: { kty: 'OKP', crv: 'Ed25519' },
};

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'oth'];

export class KeySetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeySetError';
  }
}

export class KeySet {
  /** Distinct kids, in document order. */
  readonly kids: readonly string[];
  readonly fingerprints: ReadonlySet<string>;
  /** Usable keys (distinct key material). */
  readonly size: number;
  /** JWKs skipped (wrong use, private, unsupported, algorithm not allowed, too weak, invalid). */
  readonly skipped: number;
  readonly #byAlg: Map<string, AlgKeys>;
  readonly #kids: ReadonlySet<string>;

  constructor(keys: readonly VerificationKey[], skipped: number) {
    const byAlg = new Map<string, AlgKeys>();
    const kids = new Set<string>();
    const fingerprints = new Set<string>();
    for (const k of keys) {
      let a = byAlg.get(k.alg);
      if (a === undefined) {
        a = { byKid: new Map(), noKid: [], all: [] };
        byAlg.set(k.alg, a);
      }
      if (k.kid === undefined) {
        if (a.noKid.length < MAX_CANDIDATES) a.noKid.push(k);
      } else {
        kids.add(k.kid);
        const list = a.byKid.get(k.kid);
        if (list === undefined) a.byKid.set(k.kid, [k]);
        else if (list.length < MAX_CANDIDATES) list.push(k);
      }
      if (a.all.length < MAX_CANDIDATES) a.all.push(k);
      fingerprints.add(k.fingerprint);
    }
    this.#byAlg = byAlg;
    this.#kids = kids;
    this.kids = [...kids];
    this.fingerprints = fingerprints;
    this.size = fingerprints.size;
    this.skipped = skipped;
  }

  /**
   * Candidate keys for a token's `alg` and `kid`, or undefined when none fits: for a kid, the keys
   * with that kid, else the keys without a kid; without a kid, every key of the algorithm.
   */
  lookup(alg: string, kid: string | undefined): readonly VerificationKey[] | undefined {
    const a = this.#byAlg.get(alg);
    if (a === undefined) return undefined;
    if (kid === undefined) return a.all.length > 0 ? a.all : undefined;
    const list = a.byKid.get(kid);
    if (list !== undefined) return list;
    return a.noKid.length > 0 ? a.noKid : undefined;
  }

  /** The set holds a key with this kid (for any algorithm). */
  hasKid(kid: string): boolean {
    return this.#kids.has(kid);
  }
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}

/** The public members only, so nothing else in the document reaches the importer. */
function publicJwk(jwk: Record<string, unknown>): JWK | undefined {
  switch (jwk.kty) {
    case 'RSA': {
      const n = str(jwk.n);
      const e = str(jwk.e);
      return n && e ? { kty: 'RSA', n, e } : undefined;
    }
    case 'EC': {
      const crv = str(jwk.crv);
      const x = str(jwk.x);
      const y = str(jwk.y);
      return crv && x && y ? { kty: 'EC', crv, x, y } : undefined;
    }
    case 'OKP': {
      const crv = str(jwk.crv);
      const x = str(jwk.x);
      return crv && x ? { kty: 'OKP', crv, x } : undefined;
    }
    default:
      return undefined;
  }
}

function fingerprintOf(jwk: JWK): string {
  return jwk.kty === 'RSA' ? `RSA:${jwk.n}:${jwk.e}` : `${jwk.kty}:${jwk.crv}:${jwk.x}:${jwk.y ?? ''}`;
}

async function importOne(
  jwk: JWK,
  kid: string | undefined,
  alg: JwtAlgorithm,
  fingerprint: string,
): Promise<VerificationKey | undefined> {
  try {
    const key = (await importJWK({ ...jwk, ext: false }, alg)) as CryptoKey;
    if (key.type !== 'public') return undefined;
    if (jwk.kty === 'RSA') {
      const bits = (key.algorithm as { modulusLength?: number }).modulusLength;
      if (typeof bits !== 'number' || bits < 2048) return undefined;
    }
    return { kid, alg, key, fingerprint };
  } catch {
    return undefined;
  }
}

/**
 * Import the usable keys of a JWKS document. Throws KeySetError when the document is not a JWKS
 * or holds no usable key (a refresh that yields nothing usable keeps the previous set).
 */
export async function buildKeySet(doc: unknown, algorithms: readonly JwtAlgorithm[]): Promise<KeySet> {
  if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { keys?: unknown }).keys))
    throw new KeySetError('not a JWKS document (expected {"keys": [...]})');
  const entries: unknown[] = (doc as { keys: unknown[] }).keys;
  let skipped = Math.max(0, entries.length - MAX_KEYS);
  const imports: Promise<VerificationKey | undefined>[] = [];
  const seen = new Set<string>();
  for (const entry of entries.slice(0, MAX_KEYS)) {
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
      skipped++;
      continue;
    }
    const raw = entry as Record<string, unknown>;
    const ops = raw.key_ops;
    const kid = raw.kid;
    const pub = publicJwk(raw);
    if (
      pub === undefined ||
      (raw.use !== undefined && raw.use !== 'sig') ||
      (ops !== undefined && !(Array.isArray(ops) && ops.includes('verify'))) ||
      PRIVATE_MEMBERS.some((m) => Object.hasOwn(raw, m)) ||
      (kid !== undefined && (typeof kid !== 'string' || kid.length === 0))
    ) {
      skipped++;
      continue;
    }
    const fingerprint = fingerprintOf(pub);
    const algs = algorithms.filter((alg) => {
      const t = KEY_TYPES[alg];
      return (
        t.kty === pub.kty &&
        (t.crv === undefined || t.crv === pub.crv) &&
        (raw.alg === undefined || raw.alg === alg)
      );
    });
    let any = false;
    for (const alg of algs) {
      const dedupe = `${kid ?? ''}\u0000${alg}\u0000${fingerprint}`;
      if (seen.has(dedupe)) continue;
      seen.add(dedupe);
      imports.push(importOne(pub, kid as string | undefined, alg, fingerprint));
      any = true;
    }
    if (!any) skipped++;
  }
  const keys: VerificationKey[] = [];
  for (const k of await Promise.all(imports)) {
    if (k === undefined) skipped++;
    else keys.push(k);
  }
  if (keys.length === 0) throw new KeySetError('no usable verification key in the JWKS');
  return new KeySet(keys, skipped);
}

/** A JWKS document for PEM public keys or certificates from the configuration. */
export function jwksFromPem(keys: readonly (string | { kid?: string | undefined; pem: string })[]): {
  keys: JWK[];
} {
  return {
    keys: keys.map((k) => {
      const pem = typeof k === 'string' ? k : k.pem;
      const kid = typeof k === 'string' ? undefined : k.kid;
      const publicKey = pem.includes('-----BEGIN CERTIFICATE-----')
        ? new X509Certificate(pem).publicKey
        : createPublicKey({ key: pem, format: 'pem' });
      const jwk = publicKey.export({ format: 'jwk' }) as JWK;
      return kid === undefined ? jwk : { ...jwk, kid };
    }),
  };
}
