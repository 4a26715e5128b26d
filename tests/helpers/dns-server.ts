/**
 * A real DNS server on a random loopback UDP port, answering from a zone the test edits: A, AAAA
 * and SRV records with TTLs (RFC 1035 §4 wire format, RFC 2782 SRV), NXDOMAIN for names it does
 * not know, and on command SERVFAIL, an empty answer, or silence. It counts the queries it gets.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import type { AddressInfo } from 'node:net';

export type RecordType = 'A' | 'AAAA' | 'SRV';

export interface AddressRecord {
  readonly address: string;
  readonly ttl: number;
}

export interface SrvRecord {
  readonly target: string;
  readonly port: number;
  readonly priority?: number;
  readonly weight?: number;
  readonly ttl: number;
}

/** What a name answers for a type: records, or a failure. */
export type ZoneEntry = readonly (AddressRecord | SrvRecord)[] | 'nxdomain' | 'servfail' | 'nodata' | 'drop';

export interface DnsTestServer {
  /** `127.0.0.1:<port>`, for Resolver.setServers. */
  readonly server: string;
  set(name: string, type: RecordType, entry: ZoneEntry): void;
  /** Queries received for a name and type so far. */
  queries(name: string, type: RecordType): number;
  close(): Promise<void>;
}

const TYPE_NAMES = new Map<number, RecordType>([
  [1, 'A'],
  [28, 'AAAA'],
  [33, 'SRV'],
]);
const RCODE = { noError: 0, serverFailure: 2, nameError: 3 } as const;

function key(name: string, type: RecordType): string {
  return `${name.toLowerCase().replace(/\.$/, '')} ${type}`;
}

/** The question's name and where the question's type field starts. */
function readName(msg: Buffer, at: number): { name: string; end: number } {
  const labels: string[] = [];
  let i = at;
  while (msg[i]! !== 0) {
    const len = msg[i]!;
    labels.push(msg.toString('latin1', i + 1, i + 1 + len));
    i += 1 + len;
  }
  return { name: labels.join('.'), end: i + 1 };
}

function encodeName(name: string): Buffer {
  const parts = name
    .replace(/\.$/, '')
    .split('.')
    .map((label) => Buffer.concat([Buffer.from([label.length]), Buffer.from(label, 'latin1')]));
  return Buffer.concat([...parts, Buffer.from([0])]);
}

function ipv6Bytes(address: string): Buffer {
  const [head, tail] = address.includes('::') ? address.split('::') : [address, undefined];
  const h = head === '' || head === undefined ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  for (let i = 0; i < groups.length; i++) out.writeUInt16BE(Number.parseInt(groups[i]!, 16), i * 2);
  return out;
}

function rdata(type: RecordType, r: AddressRecord | SrvRecord): Buffer {
  if (type === 'A') return Buffer.from((r as AddressRecord).address.split('.').map(Number));
  if (type === 'AAAA') return ipv6Bytes((r as AddressRecord).address);
  const srv = r as SrvRecord;
  const head = Buffer.alloc(6);
  head.writeUInt16BE(srv.priority ?? 10, 0);
  head.writeUInt16BE(srv.weight ?? 1, 2);
  head.writeUInt16BE(srv.port, 4);
  return Buffer.concat([head, encodeName(srv.target)]);
}

function answer(query: Buffer, qtype: number, questionEnd: number, entry: ZoneEntry | undefined): Buffer {
  const type = TYPE_NAMES.get(qtype);
  let rcode: number = RCODE.noError;
  const records: Buffer[] = [];
  if (entry === undefined || entry === 'nxdomain') rcode = RCODE.nameError;
  else if (entry === 'servfail') rcode = RCODE.serverFailure;
  else if (entry !== 'nodata' && entry !== 'drop' && type !== undefined) {
    for (const r of entry) {
      const data = rdata(type, r);
      const rr = Buffer.alloc(12);
      rr.writeUInt16BE(0xc00c, 0); // a pointer to the question's name
      rr.writeUInt16BE(qtype, 2);
      rr.writeUInt16BE(1, 4); // class IN
      rr.writeUInt32BE(r.ttl, 6);
      rr.writeUInt16BE(data.length, 10);
      records.push(rr, data);
    }
  }
  const header = Buffer.alloc(12);
  query.copy(header, 0, 0, 2); // id
  const rd = query.readUInt16BE(2) & 0x0100;
  header.writeUInt16BE(0x8000 | 0x0400 | rd | 0x0080 | rcode, 2); // QR, AA, RD, RA, RCODE
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(records.length / 2, 6);
  return Buffer.concat([header, query.subarray(12, questionEnd), ...records]);
}

export async function startDnsServer(): Promise<DnsTestServer> {
  const zone = new Map<string, ZoneEntry>();
  const counts = new Map<string, number>();
  const socket: Socket = createSocket('udp4');
  socket.on('message', (msg: Buffer, peer: RemoteInfo) => {
    if (msg.length < 17) return;
    const { name, end } = readName(msg, 12);
    const qtype = msg.readUInt16BE(end);
    const type = TYPE_NAMES.get(qtype);
    const k = type === undefined ? `${name} ?` : key(name, type);
    counts.set(k, (counts.get(k) ?? 0) + 1);
    const entry = type === undefined ? 'nodata' : zone.get(k);
    if (entry === 'drop') return;
    socket.send(answer(msg, qtype, end + 4, entry), peer.port, peer.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const { port } = socket.address() as AddressInfo;
  return {
    server: `127.0.0.1:${port}`,
    set(name, type, entry) {
      zone.set(key(name, type), entry);
    },
    queries(name, type) {
      return counts.get(key(name, type)) ?? 0;
    },
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}
