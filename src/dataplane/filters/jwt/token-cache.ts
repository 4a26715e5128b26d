/**
 * Verified tokens by token string, so a token presented again costs one Map lookup and a clock
 * comparison instead of a signature verification.
 *
 * Bounded twice: by entries (insertion order, oldest out first: a hit does not reorder, which
 * would cost a delete and a set of a ~1 KB string key per request; a hot token that falls out is
 * verified once more) and by time (an entry is never served at or after the token's `exp`,
 * whatever the clock tolerance lets a fresh verification accept). Entries verified with a key that
 * left the provider's key set are dropped when the set changes (`retain`).
 *
 * The Map is keyed by the token's last KEY_LENGTH characters (inside the signature), and a hit is
 * confirmed by comparing the whole token. A request's token is a fresh string whose hash V8 must
 * compute: hashing a ~420-character ES256 token costs about 600 ns, the 32-character key plus a
 * memcmp about 45 ns (bench/micro/jwt.ts). A token sharing the key but not the rest is a miss and
 * goes to full verification, so the shorter key changes nothing about what is accepted.
 */

export interface VerifiedToken {
  readonly claims: Readonly<Record<string, unknown>>;
  /** `sub` when it is a string. */
  readonly subject: string | undefined;
  /** The token's `exp` in ms since the epoch. */
  readonly expiresAt: number;
  /** Fingerprint of the key that verified it (see key-set.ts). */
  readonly fingerprint: string;
  /** Granted scopes, filled on first use by a route that checks scopes. */
  scopes: ReadonlySet<string> | undefined;
}

/** Expired entries removed, at most, next to the oldest when the cache is full. */
const EVICT_SCAN = 16;
/** 32 base64url characters: 192 bits of the signature. */
const KEY_LENGTH = 32;

interface Entry {
  readonly token: string;
  readonly verified: VerifiedToken;
}

function keyOf(token: string): string {
  return token.length > KEY_LENGTH ? token.slice(token.length - KEY_LENGTH) : token;
}

export class TokenCache {
  readonly maxEntries: number;
  readonly #map = new Map<string, Entry>();

  constructor(maxEntries: number) {
    this.maxEntries = maxEntries;
  }

  get size(): number {
    return this.#map.size;
  }

  get(token: string, now: number): VerifiedToken | undefined {
    const key = keyOf(token);
    const entry = this.#map.get(key);
    if (entry === undefined || entry.token !== token) return undefined;
    if (now >= entry.verified.expiresAt) {
      this.#map.delete(key);
      return undefined;
    }
    return entry.verified;
  }

  set(token: string, verified: VerifiedToken, now: number): void {
    if (this.maxEntries === 0 || now >= verified.expiresAt) return;
    const key = keyOf(token);
    if (!this.#map.has(key) && this.#map.size >= this.maxEntries) this.#evict(now);
    this.#map.set(key, { token, verified });
  }

  /** Keep only entries verified with one of these keys. */
  retain(fingerprints: ReadonlySet<string>): void {
    for (const [key, entry] of this.#map) {
      if (!fingerprints.has(entry.verified.fingerprint)) this.#map.delete(key);
    }
  }

  clear(): void {
    this.#map.clear();
  }

  #evict(now: number): void {
    let scanned = 0;
    for (const [key, entry] of this.#map) {
      if (scanned === 0 || now >= entry.verified.expiresAt) this.#map.delete(key);
      if (++scanned >= EVICT_SCAN) break;
    }
  }
}
