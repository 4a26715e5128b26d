import { BlockList, isIP, isIPv6 } from 'node:net';

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

/**
 * The client's address as the trusted forwarded chain tells it: the peer's own address, unless
 * the peer is a trusted proxy; then X-Forwarded-For is read right to left, past every trusted
 * proxy, and the first address not on the list is the client. An entry that is not an IP address
 * stops the walk at the trusted hop that reported it (anything further left is the client's own
 * claim). Only peers on the list are believed, so a client cannot choose the address it is known by.
 */
export function forwardedClientAddress(peer: string, xff: string | undefined, trust: TrustCheck): string {
  if (xff === undefined || !trust(peer)) return peer;
  let hop = peer;
  let end = xff.length;
  while (end > 0) {
    const comma = xff.lastIndexOf(',', end - 1);
    const entry = xff.slice(comma + 1, end).trim();
    end = comma < 0 ? 0 : comma;
    if (entry.length === 0) continue;
    if (isIP(entry) === 0) return hop;
    hop = plainAddress(entry);
    if (!trust(hop)) return hop;
  }
  return hop;
}
