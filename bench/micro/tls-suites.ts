/**
 * The mesh hop's TLS record cost by TLS 1.3 cipher suite: a loopback mTLS echo in one process
 * (both ends), the hop's shape (199-byte requests, 331-byte answers, one request at a time on one
 * connection kept open, ECDSA P-256 X.509-SVIDs from the development CA), each
 * suite forced on both ends through Node's `ciphers` (TLS 1.3 names go there; Node has no
 * separate `ciphersuites` option). Prints CPU per round trip (4 records: two encrypted, two
 * decrypted), suites interleaved over MICRO_ROUNDS rounds, median.
 *
 *   node bench/micro/tls-suites.ts                         (MICRO_TRIPS=20000, MICRO_ROUNDS=5)
 *   valgrind --tool=callgrind node bench/micro/tls-suites.ts TLS_AES_128_GCM_SHA256
 *     (one suite, MICRO_ROUNDS=1, at two MICRO_TRIPS: the difference of SSL_read + SSL_write
 *     inclusive, callgrind_annotate --inclusive=yes, is OpenSSL's instructions per round trip)
 *
 * Not a test; decisions.md ("The mesh hop's TLS cost") has the numbers.
 */
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { createDevCa, issueSvid, loadDevCa } from '../../src/tls/dev-ca.ts';

const SUITES = ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256'];
const trips = Number(process.env.MICRO_TRIPS ?? 20_000);
const rounds = Number(process.env.MICRO_ROUNDS ?? 5);
const suites = process.argv.length > 2 ? process.argv.slice(2) : SUITES;
const REQUEST = Buffer.alloc(199, 0x61);
const ANSWER = Buffer.alloc(331, 0x62);

const HOUR = 3_600_000;
const caPem = await createDevCa('bench.local', 2 * HOUR);
const ca = await loadDevCa(caPem.cert, caPem.key, { cert: 'ca.crt', key: 'ca.key' });
const svid = (service: string) =>
  issueSvid(ca, {
    spiffeId: `spiffe://bench.local/ns/bench/sa/${service}`,
    commonName: service,
    ttlMs: HOUR,
  });
const [server, client] = [await svid('bench'), await svid('client')];

/** CPU microseconds per round trip of `suite`, and the suite the connection negotiated. */
async function measure(suite: string): Promise<{ us: number; negotiated: string }> {
  const srv = tls.createServer(
    {
      ...server,
      ca: caPem.cert,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
      ciphers: suite,
    },
    (s) => {
      s.setNoDelay(true);
      s.on('data', () => s.write(ANSWER));
    },
  );
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  const c = tls.connect({
    ...client,
    ca: caPem.cert,
    port,
    host: '127.0.0.1',
    servername: 'bench',
    checkServerIdentity: () => undefined,
    minVersion: 'TLSv1.3',
    ciphers: suite,
  });
  await new Promise<void>((r, j) => c.once('secureConnect', r).once('error', j));
  c.setNoDelay(true);
  const result = await new Promise<number>((resolve) => {
    let left = trips;
    const t0 = process.cpuUsage();
    c.on('data', () => {
      if (--left > 0) c.write(REQUEST);
      else {
        const u = process.cpuUsage(t0);
        resolve((u.user + u.system) / trips);
      }
    });
    c.write(REQUEST);
  });
  const negotiated = c.getCipher().standardName;
  c.destroy();
  await new Promise<void>((r) => srv.close(() => r()));
  return { us: result, negotiated };
}

const samples = new Map<string, number[]>(suites.map((s) => [s, []]));
for (let round = 0; round < rounds; round++)
  for (const suite of suites) {
    const { us, negotiated } = await measure(suite);
    if (negotiated !== suite) throw new Error(`asked for ${suite}, negotiated ${negotiated}`);
    samples.get(suite)!.push(us);
  }
for (const [suite, us] of samples) {
  const sorted = [...us].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  console.log(
    `${suite.padEnd(30)} ${median.toFixed(2)} µs CPU per round trip (rounds: ${us.map((u) => u.toFixed(1)).join(' ')})`,
  );
}
