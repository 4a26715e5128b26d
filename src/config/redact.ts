/**
 * The one redaction for everything the admin API shows: the effective configuration, routes,
 * upstreams, auth providers, reload errors. Values under secret-looking keys become "[redacted]"
 * (whole subtrees included), and credentials in URLs anywhere are replaced. Generic on purpose:
 * a key that holds a secret is caught by its name wherever it sits, so a new view or a new config
 * section needs nothing added here. A route's header match is a map from header name to value, so
 * `authorization`, `cookie` or `x-api-key` values are caught by the same rule.
 */

const SECRET_KEY_RE = /secret|password|token|key$|authorization|credential|cookie/i;
/** scheme://userinfo@ — userinfo is whatever precedes the first @ before any / ? # or space. */
const URL_USERINFO_RE = /\b([a-z][a-z0-9+.-]*:\/\/)[^/?#@\s]+@/gi;
export const REDACTED_VALUE = '[redacted]';

/** A deep copy of `value` safe to show, as JSON would show it (objects, arrays, scalars, dates). */
export function redact(value: unknown): unknown {
  if (typeof value === 'string') return value.replace(URL_USERINFO_RE, `$1${REDACTED_VALUE}@`);
  if (Array.isArray(value)) return value.map(redact);
  if (typeof value === 'object' && value !== null) {
    // A Date (or anything else with its own JSON form) is shown as res.json would show it.
    const toJSON = (value as { toJSON?: () => unknown }).toJSON;
    if (typeof toJSON === 'function') return redact(toJSON.call(value));
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = SECRET_KEY_RE.test(k) && v !== undefined && v !== null ? REDACTED_VALUE : redact(v);
    }
    return out;
  }
  return value;
}
