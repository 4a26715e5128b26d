/**
 * Host names as routing compares them: lower case, no port, no trailing dot. IPv6 literals keep
 * their brackets (`[::1]:8080` → `[::1]`). Returns `''` for an absent or empty Host.
 */
export function normalizeHost(raw: string | undefined): string {
  if (raw === undefined || raw.length === 0) return '';
  let host: string;
  if (raw.charCodeAt(0) === 0x5b /* [ */) {
    const close = raw.indexOf(']');
    host = close === -1 ? raw : raw.slice(0, close + 1);
  } else {
    const colon = raw.indexOf(':');
    host = colon === -1 ? raw : raw.slice(0, colon);
  }
  // `example.com.` is the same name as `example.com` (fully qualified); treat it so, or a trailing
  // dot would step around host-specific routes.
  if (host.endsWith('.')) host = host.slice(0, -1);
  return host.toLowerCase();
}
