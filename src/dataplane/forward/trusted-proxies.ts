import { BlockList, isIPv6 } from 'node:net';

export type TrustCheck = (peerAddress: string | undefined) => boolean;

const NEVER: TrustCheck = () => false;

/** Strip the IPv4-mapped IPv6 prefix Node reports for IPv4 peers on dual-stack sockets. */
export function plainAddress(address: string | undefined): string {
  if (!address) return '';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/**
 * Compile the listener's trusted-proxy list (addresses or CIDRs) once. Only peers on this list may
 * hand us X-Forwarded-* / Forwarded headers; everyone else has them replaced.
 */
export function createTrustCheck(cidrs: readonly string[]): TrustCheck {
  if (cidrs.length === 0) return NEVER;
  const list = new BlockList();
  for (const entry of cidrs) {
    const [addr, bits] = entry.split('/') as [string, string | undefined];
    const family = isIPv6(addr) ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(addr, family);
    else list.addSubnet(addr, Number(bits), family);
  }
  return function isTrustedProxy(peer) {
    if (!peer) return false;
    const addr = plainAddress(peer);
    return list.check(addr, isIPv6(addr) ? 'ipv6' : 'ipv4');
  };
}
