/**
 * SPIFFE IDs (spiffe.io, SPIFFE-ID standard): what a well-formed one is, and the identities an
 * upstream is expected to present, written as a list of IDs or as a pattern that follows the
 * service's name (`spiffe://prod.example/ns/prod/sa/{service}`, with `*` for any one segment).
 */

const MAX_ID = 2048;
// Lower-case trust domain; path segments of letters, digits, `.`, `-`, `_`, none empty, `.` or
// `..`; no query, fragment, port or user info (SPIFFE-ID §2).
const SPIFFE_RE = /^spiffe:\/\/[a-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;
const DOT_SEGMENT_RE = /\/\.\.?(\/|$)/;
const SEGMENT_RE = /^[A-Za-z0-9._-]+$/;

export const SERVICE_PLACEHOLDER = '{service}';
const WILDCARD = '*';

export function isSpiffeId(uri: string): boolean {
  return uri.length <= MAX_ID && SPIFFE_RE.test(uri) && !DOT_SEGMENT_RE.test(uri);
}

/** The trust domain and path of a SPIFFE ID (`spiffe://td/a/b` → `td`, `/a/b`); undefined if not one. */
export function parseSpiffeId(uri: string): { trustDomain: string; path: string } | undefined {
  if (!isSpiffeId(uri)) return undefined;
  const slash = uri.indexOf('/', 'spiffe://'.length);
  return slash < 0
    ? { trustDomain: uri.slice('spiffe://'.length), path: '' }
    : { trustDomain: uri.slice('spiffe://'.length, slash), path: uri.slice(slash) };
}

/** A SPIFFE ID a workload may have: a leaf's ID names a workload, so it has a path (X509-SVID §3.1). */
export function isWorkloadId(uri: string): boolean {
  const id = parseSpiffeId(uri);
  return id !== undefined && id.path !== '';
}

/** A trust domain name: lower-case letters, digits, `.`, `-`, `_`. */
export function isTrustDomain(name: string): boolean {
  return name.length > 0 && name.length <= 255 && isSpiffeId(`spiffe://${name}`) && !name.includes('/');
}

/**
 * Whether `pattern` is a workload SPIFFE ID in which whole path segments may be `*` (any one
 * segment) or `{service}` (the service's name), as in the registry's credential patterns. The
 * trust domain is always literal: a pattern never reaches into another trust domain.
 */
export function isIdentityPattern(pattern: string): boolean {
  const id = parseSpiffeId(pattern.replaceAll(SERVICE_PLACEHOLDER, 'x').replaceAll('/*', '/x'));
  if (id === undefined || id.path === '') return false;
  const prefix = `spiffe://${id.trustDomain}/`;
  // `a*` or `svc-{service}` would read as globbing or templating we do not do.
  return (
    pattern.startsWith(prefix) &&
    pattern
      .slice(prefix.length)
      .split('/')
      .every((s) => s === WILDCARD || s === SERVICE_PLACEHOLDER || !/[*{}]/.test(s))
  );
}

/** The identities an upstream's peer may present. */
export interface ExpectedIdentity {
  /** As configured, with `{service}` filled in: for log lines and the admin API. */
  readonly expected: readonly string[];
  matches(spiffeId: string): boolean;
}

/** Exactly these IDs. */
function exactly(ids: readonly string[]): ExpectedIdentity {
  const set = new Set(ids);
  return { expected: [...set], matches: (id) => set.has(id) };
}

/** A pattern with `{service}` filled in, compared segment by segment. */
function byPattern(pattern: string, service: string): ExpectedIdentity {
  const filled = pattern.replaceAll(SERVICE_PLACEHOLDER, service);
  const parsed = parseSpiffeId(filled.replaceAll('/*', '/x'));
  if (parsed === undefined || !SEGMENT_RE.test(service))
    throw new Error(`identity pattern ${pattern} with service ${JSON.stringify(service)} is not a SPIFFE ID`);
  const prefix = `spiffe://${parsed.trustDomain}/`;
  const segments = filled.slice(prefix.length).split('/');
  return {
    expected: [filled],
    matches(id: string): boolean {
      if (!id.startsWith(prefix) || !isSpiffeId(id)) return false;
      const got = id.slice(prefix.length).split('/');
      if (got.length !== segments.length) return false;
      for (let i = 0; i < got.length; i++) {
        if (segments[i] !== WILDCARD && segments[i] !== got[i]) return false;
      }
      return true;
    },
  };
}

/** The expected identity of `identity.expect` (a list of IDs) or `identity.expectPattern`. */
export function expectedIdentity(
  cfg: { readonly expect?: readonly string[] | undefined; readonly expectPattern?: string | undefined },
  service: string,
): ExpectedIdentity {
  if (cfg.expect !== undefined) return exactly(cfg.expect);
  if (cfg.expectPattern !== undefined) return byPattern(cfg.expectPattern, service);
  throw new Error('identity needs expect or expectPattern');
}
