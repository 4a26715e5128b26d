/**
 * What the wide-upstream measurements share: the upstream of many endpoints in one process
 * (bench/peers/wide-upstream.ts) and counting the connections a process holds to it. Linux only.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { wideOrigins } from '../peers/wide-upstream.ts';
import { httpGet, type Managed } from './proc.ts';
import { startPeer } from './targets.ts';

export interface WideUpstream {
  proc: Managed;
  port: number;
  /** Its first address, 127.0.0.1:port: a one-endpoint upstream. */
  origin: string;
  /** Every endpoint's origin. */
  origins: string[];
}

export interface WideStats {
  listening: number;
  open: number;
  accepted: number;
  requests: number;
}

export async function wideStats(origin: string): Promise<WideStats> {
  return JSON.parse((await httpGet(`${origin}/__wide/stats`)).body) as WideStats;
}

/** The upstream of `n` endpoints, once every address listens. */
export async function startWideUpstream(
  ctx: { node: string; root: string },
  n: number,
): Promise<WideUpstream> {
  const peer = await startPeer(ctx, 'wide-upstream.ts', { WIDE_ENDPOINTS: String(n) });
  const deadline = Date.now() + 30_000;
  let last = '';
  while (Date.now() < deadline) {
    if (!peer.proc.running) throw new Error(`wide upstream exited:\n${peer.proc.output()}`);
    try {
      const s = await wideStats(peer.origin);
      if (s.listening === n) return { ...peer, origins: wideOrigins(n, peer.port) };
      last = `${s.listening} of ${n} addresses listening`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`wide upstream not ready after 30 s (${last})`);
}

/** The inodes of the sockets process `pid` has open. */
function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  return inodes;
}

/** Established TCP (IPv4) connections process `pid` holds to remote port `port`, any address. */
export function connectionsTo(pid: number, port: number): number {
  const inodes = socketInodes(pid);
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  let n = 0;
  for (const line of readFileSync(`/proc/${pid}/net/tcp`, 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
    if (f.length < 10 || f[3] !== '01') continue;
    if (f[2]!.split(':')[1] === hexPort && inodes.has(f[9]!)) n++;
  }
  return n;
}
