/**
 * Which addresses an instance may register. A registration points the gateway's traffic at an
 * address, so a credential that may register must not be able to aim it at the gateway itself
 * (loopback), a cloud metadata endpoint (link-local: 169.254.169.254), or nothing at all
 * (unspecified, multicast, broadcast). Addresses are IP literals only: a host name could resolve
 * anywhere, later. IPv4-mapped IPv6 forms are judged (and stored) as the IPv4 address they are.
 */
import { isIP } from 'node:net';
import { createTrustCheck } from '../dataplane/forward/trusted-proxies.ts';
import type { RegistryConfig } from './schema.ts';

export type AddressVerdict =
  | { readonly ok: true; readonly address: string }
  | { readonly ok: false; readonly detail: string };

export type AddressPolicy = (raw: string) => AddressVerdict;

const NEVER = createTrustCheck([
  '0.0.0.0/8', // "this network", 0.0.0.0 included
  '::/128',
  '224.0.0.0/4', // multicast
  'ff00::/8',
  '255.255.255.255/32',
]);
const LOOPBACK = createTrustCheck(['127.0.0.0/8', '::1/128']);
const LINK_LOCAL = createTrustCheck(['169.254.0.0/16', 'fe80::/10']);

const MAPPED_HEX_RE = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/;

/** The canonical form of an IP literal (lower-case, compressed IPv6; mapped IPv4 as IPv4), or undefined. */
export function canonicalIp(raw: string): string | undefined {
  if (raw.length > 45 || raw.includes('%')) return undefined;
  const family = isIP(raw);
  if (family === 4) return raw;
  if (family !== 6) return undefined;
  let v6: string;
  try {
    v6 = new URL(`http://[${raw}]/`).hostname.slice(1, -1);
  } catch {
    return undefined;
  }
  const mapped = MAPPED_HEX_RE.exec(v6);
  if (mapped) {
    const hi = Number.parseInt(mapped[1]!, 16);
    const lo = Number.parseInt(mapped[2]!, 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return v6;
}

export function createAddressPolicy(cfg: RegistryConfig['addresses']): AddressPolicy {
  const allow = cfg.allow.length > 0 ? createTrustCheck(cfg.allow) : undefined;
  const deny = createTrustCheck(cfg.deny);
  return function checkAddress(raw) {
    const address = canonicalIp(raw);
    if (address === undefined)
      return {
        ok: false,
        detail: `address ${JSON.stringify(raw)} is not an IP address (host names are not registered)`,
      };
    if (NEVER(address))
      return { ok: false, detail: `address ${address} is unspecified, multicast or broadcast` };
    if (deny(address))
      return { ok: false, detail: `address ${address} is denied by registry.addresses.deny` };
    if (!cfg.allowLoopback && LOOPBACK(address))
      return {
        ok: false,
        detail: `address ${address} is loopback (registry.addresses.allowLoopback is off)`,
      };
    if (!cfg.allowLinkLocal && LINK_LOCAL(address))
      return {
        ok: false,
        detail: `address ${address} is link-local (registry.addresses.allowLinkLocal is off)`,
      };
    if (allow !== undefined && !allow(address))
      return { ok: false, detail: `address ${address} is not in registry.addresses.allow` };
    return { ok: true, address };
  };
}
