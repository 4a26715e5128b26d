/**
 * HTTP/2 clients through a TLS listener to HTTP/1.1 upstreams: GET and streamed bodies,
 * pseudo-headers never forwarded, `:authority` routing, a cut response seen as a reset stream,
 * GOAWAY on drain, and rapid-reset / oversized-header / CONTINUATION floods closing the session while the
 * process keeps serving.
 */
import { type ClientHttp2Session, constants, connect as h2connect } from 'node:http2';
import { createServer as createTcpServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HpackDecoder } from '../../src/dataplane/listener/hpack-decoder.ts';
import {
  type CertFiles,
  createTestPki,
  removeCertFiles,
  type TestPki,
  writeCertFiles,
} from '../helpers/certs.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { frame, h2Socket, literal, PREFACE, u32 } from '../helpers/h2-frames.ts';
import { h2Request, h2Session, httpsFetch, metricValue, scrape } from '../helpers/tls-client.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const { NGHTTP2_ENHANCE_YOUR_CALM } = constants;

let pki: TestPki;
let files: CertFiles;
let up: TestUpstream;
let api: TestUpstream;
let gw: TestGateway;
let session: ClientHttp2Session;

function tlsListener(extra: Record<string, unknown> = {}) {
  return { name: 'edge', address: '127.0.0.1:0', tls: { cert: files.cert, key: files.key }, ...extra };
}

beforeAll(async () => {
  pki = await createTestPki();
  files = writeCertFiles(pki.server, pki.ca.cert);
  up = await startUpstream();
  api = await startUpstream();
  gw = await startGateway({
    listeners: [tlsListener({ http2: { rapidReset: { maxResets: 50, window: '10s' } } })],
    upstreams: {
      echo: { endpoints: [up.url], timeouts: { response: '2s', idle: '2s', request: '10s' } },
      api: { endpoints: [api.url] },
    },
    routes: [
      { name: 'api', match: { host: 'api.example.com' }, upstream: 'api' },
      { name: 'echo', match: { path: '/' }, upstream: 'echo' },
    ],
  });
  session = await h2Session(gw.port, { ca: pki.ca.cert });
});

afterAll(async () => {
  session?.close();
  await gw?.close();
  await up?.close();
  await api?.close();
  removeCertFiles();
});

function lastSeen(u: TestUpstream = up) {
  return u.requests[u.requests.length - 1]!;
}

interface Echo {
  method: string;
  url: string;
  headers: Record<string, string>;
  rawHeaders: string[];
}

async function* slowChunks(n: number, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < n; i++) {
    yield Buffer.alloc(size, 0x61 + i);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('HTTP/2 over TLS to HTTP/1.1 upstreams', () => {
  it('proxies a GET: pseudo-headers are not forwarded, :authority becomes Host', async () => {
    const res = await h2Request(session, {
      ':method': 'GET',
      ':path': '/items/7?x=1',
      'x-custom': 'yes',
      'user-agent': 'h2-test',
    });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/json');
    expect(res.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    const body = JSON.parse(res.body) as Echo;
    expect(body.method).toBe('GET');
    expect(body.url).toBe('/items/7?x=1');
    expect(body.headers['x-custom']).toBe('yes');
    expect(body.headers.host).toBe(`localhost:${gw.port}`);
    expect(body.headers['x-forwarded-host']).toBe(`localhost:${gw.port}`);
    expect(body.headers['x-forwarded-proto']).toBe('https');
    // The peer's address, though the session runs on the field check's stream.
    expect(body.headers['x-forwarded-for']).toBe('127.0.0.1');
    const names = body.rawHeaders.filter((_, i) => i % 2 === 0);
    expect(names.some((n) => n.startsWith(':'))).toBe(false);
    expect(names.filter((n) => n.toLowerCase() === 'host')).toHaveLength(1);
  });

  it('routes by :authority', async () => {
    const res = await h2Request(session, {
      ':method': 'GET',
      ':path': '/v1/users',
      ':authority': 'api.example.com',
    });
    expect(res.status).toBe(200);
    expect(lastSeen(api).url).toBe('/v1/users');
    expect(lastSeen(api).headers.host).toBe('api.example.com');
  });

  it('refuses a request whose Host differs from :authority', async () => {
    const res = await h2Request(session, {
      ':method': 'GET',
      ':path': '/',
      ':authority': 'api.example.com',
      host: 'other.example.com',
    });
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.headers.connection).toBeUndefined();
  });

  it('streams a request body without content-length (chunked upstream)', async () => {
    const res = await h2Request(session, { ':method': 'POST', ':path': '/sink' }, slowChunks(8, 16 * 1024));
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ bytes: 8 * 16 * 1024 });
    const seen = lastSeen();
    expect(seen.method).toBe('POST');
    expect(seen.headers['transfer-encoding']).toBe('chunked');
    expect(seen.headers['content-length']).toBeUndefined();
  });

  it('streams a body with content-length, and echoes it back', async () => {
    const payload = 'x'.repeat(100_000);
    const res = await h2Request(
      session,
      {
        ':method': 'PUT',
        ':path': '/echo-body',
        'content-type': 'text/plain',
        'content-length': payload.length,
      },
      payload,
    );
    expect(res.status).toBe(200);
    expect(res.body).toBe(payload);
    expect(lastSeen().headers['content-length']).toBe(String(payload.length));
  });

  it('joins HTTP/2 cookie fields into one Cookie header', async () => {
    const res = await h2Request(session, { ':method': 'GET', ':path': '/cookies', cookie: ['a=1', 'b=2'] });
    expect(res.status).toBe(200);
    const seen = lastSeen();
    expect(seen.headers.cookie).toBe('a=1; b=2');
    expect(seen.rawHeaders.filter((n, i) => i % 2 === 0 && n.toLowerCase() === 'cookie')).toHaveLength(1);
  });

  it('answers HEAD and many concurrent streams on one session', async () => {
    const head = await h2Request(session, { ':method': 'HEAD', ':path': '/bytes/1000' });
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => h2Request(session, { ':method': 'GET', ':path': `/c/${i}` })),
    );
    expect(results.map((r) => r.status)).toEqual(Array(40).fill(200));
    expect(results.map((r) => (JSON.parse(r.body) as Echo).url)).toEqual(
      Array.from({ length: 40 }, (_, i) => `/c/${i}`),
    );
  });

  it('resets the stream when the upstream dies mid-body (never a complete-looking response)', async () => {
    const err = await h2Request(session, { ':method': 'GET', ':path': '/cut/5000' }).then(
      () => undefined,
      (e: Error & { code?: string }) => e,
    );
    expect(err).toBeDefined();
    expect(err!.code).toBe('ERR_HTTP2_STREAM_ERROR');
    expect(err!.message).toContain('NGHTTP2_INTERNAL_ERROR');
    // The session itself is fine.
    expect((await h2Request(session, { ':method': 'GET', ':path': '/after-cut' })).status).toBe(200);
  });

  it('cancels the upstream request when the client resets its stream (499 CLIENT_CLOSED)', async () => {
    const seenBefore = up.requests.length;
    const abortedBefore = up.abortedCount();
    const stream = session.request({ ':method': 'GET', ':path': '/hang/h2-cancel' });
    stream.on('error', () => {});
    for (let i = 0; i < 200 && up.requests.length === seenBefore; i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(lastSeen().url).toBe('/hang/h2-cancel');
    stream.close(constants.NGHTTP2_CANCEL);
    for (let i = 0; i < 200 && up.abortedCount() === abortedBefore; i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(up.abortedCount()).toBe(abortedBefore + 1);
    let line: Record<string, unknown> | undefined;
    for (let i = 0; i < 200 && !line; i++) {
      line = gw.logs.access().find((l) => l.path === '/hang/h2-cancel');
      if (!line) await new Promise((r) => setTimeout(r, 10));
    }
    expect(line).toMatchObject({ status: 499, code: 'CLIENT_CLOSED' });
  });

  it('serves HTTP/1.1 on the same port', async () => {
    const res = await httpsFetch(gw.port, '/h1', { ca: pki.ca.cert }, { alpn: ['http/1.1'] });
    expect(res.alpn).toBe('http/1.1');
    expect(res.status).toBe(200);
    const text = await scrape(gw.adminUrl);
    expect(
      metricValue(text, 'peregrine_tls_handshakes_total', { listener: 'edge', alpn: 'h2' }),
    ).toBeGreaterThan(0);
    const access = gw.logs.access().filter((l) => l.path === '/items/7');
    expect(access[0]).toMatchObject({ listener: 'edge', route: 'echo', method: 'GET', status: 200 });
  });

  it('closes a session that floods HEADERS + RST_STREAM (rapid reset) with GOAWAY ENHANCE_YOUR_CALM', async () => {
    const pairs = 2000;
    const requestsBefore = up.requests.length;
    const frames = await rawH2(
      gw.port,
      pki.ca.cert,
      (id, block) => [frame(1, 0x5, id, block), frame(3, 0, id, u32(constants.NGHTTP2_CANCEL))],
      pairs,
    );
    expect(frames.goawayCode).toBe(NGHTTP2_ENHANCE_YOUR_CALM);
    const text = await scrape(gw.adminUrl);
    expect(
      metricValue(text, 'peregrine_http2_sessions_closed_total', { listener: 'edge', reason: 'rapid_reset' }),
    ).toBe(1);
    // Work stayed bounded: the session was cut after the limit, far below the streams sent.
    expect(up.requests.length - requestsBefore).toBeLessThan(200);
    // And the gateway keeps serving, on the existing session and on new ones.
    expect((await h2Request(session, { ':method': 'GET', ':path': '/after-flood' })).status).toBe(200);
    const fresh = await h2Session(gw.port, { ca: pki.ca.cert });
    expect((await h2Request(fresh, { ':method': 'GET', ':path': '/fresh' })).status).toBe(200);
    fresh.close();
  });

  it('closes a session that keeps opening streams over the limit', async () => {
    // Each stream waits on a slow upstream, so it stays open; past 100 (maxConcurrentStreams) they
    // are refused, and past maxSessionRejectedStreams refusals the session is closed.
    const frames = await rawH2(
      gw.port,
      pki.ca.cert,
      (id, block) => [frame(1, 0x5, id, block)],
      400,
      '/delay/3000',
    );
    expect(frames.refused).toBeGreaterThan(0);
    const text = await scrape(gw.adminUrl);
    expect(
      metricValue(text, 'peregrine_http2_sessions_closed_total', {
        listener: 'edge',
        reason: 'invalid_frames',
      }),
    ).toBe(1);
    expect((await h2Request(session, { ':method': 'GET', ':path': '/after-streams' })).status).toBe(200);
  });

  it('refuses an oversized header list without harm to the process', async () => {
    const own = await h2Session(gw.port, { ca: pki.ca.cert });
    own.on('error', () => {});
    const outcome = await h2Request(own, {
      ':method': 'GET',
      ':path': '/big',
      'x-big': 'b'.repeat(64 * 1024),
    }).then(
      (r) => r.status,
      (e: Error) => e,
    );
    // nghttp2 refuses the stream (REFUSED_STREAM) before the gateway sees it.
    expect(outcome).toBeInstanceOf(Error);
    expect((outcome as Error).message).toMatch(/NGHTTP2_(REFUSED_STREAM|ENHANCE_YOUR_CALM|PROTOCOL_ERROR)/);
    own.destroy();
    expect((await h2Request(session, { ':method': 'GET', ':path': '/after-big' })).status).toBe(200);
  });

  it('closes a session flooded with CONTINUATION frames and keeps serving', async () => {
    const protocolErrorsBefore =
      metricValue(await scrape(gw.adminUrl), 'peregrine_http2_sessions_closed_total', {
        listener: 'edge',
        reason: 'protocol_error',
      }) ?? 0;
    // HEADERS with END_STREAM but without END_HEADERS, then 2,000 CONTINUATION frames that never
    // end the header block (2 MB): literal `x-a` fields of 100 bytes, ten per frame.
    const junk = Buffer.from([0x00, 3, ...Buffer.from('x-a'), 100, ...Buffer.alloc(100, 0x61)]);
    const continuation = Buffer.concat(Array.from({ length: 10 }, () => junk));
    const flood = rawH2(
      gw.port,
      pki.ca.cert,
      (id, block) => [
        frame(1, 0x1, id, block),
        ...Array.from({ length: 2000 }, () => frame(9, 0, id, continuation)),
      ],
      1,
    );
    const timeout = new Promise<'still open'>((resolve) => setTimeout(() => resolve('still open'), 5000));
    expect(await Promise.race([flood.then(() => 'closed' as const), timeout])).toBe('closed');
    // nghttp2 refuses the flood (a protocol error), the session is closed and counted, and the
    // upstream saw nothing. (A GOAWAY may be sent, but the client's unread writes turn the close
    // into a reset that can discard it, so it is not asserted.)
    const labels = { listener: 'edge', reason: 'protocol_error' };
    let after: number | undefined;
    for (let i = 0; i < 100 && (after ?? 0) <= protocolErrorsBefore; i++) {
      after = metricValue(await scrape(gw.adminUrl), 'peregrine_http2_sessions_closed_total', labels);
      if ((after ?? 0) <= protocolErrorsBefore) await new Promise((r) => setTimeout(r, 20));
    }
    expect(after).toBe(protocolErrorsBefore + 1);
    expect(up.requests.some((r) => r.headers['x-a'] !== undefined)).toBe(false);
    expect((await h2Request(session, { ':method': 'GET', ':path': '/after-continuation' })).status).toBe(200);
  });

  it('closes an idle session with GOAWAY after http2.idleTimeout, not one with an open stream', async () => {
    const local = await startGateway({
      listeners: [tlsListener({ http2: { idleTimeout: '300ms' } })],
      upstreams: { echo: { endpoints: [up.url] } },
      routes: [{ name: 'echo', upstream: 'echo' }],
    });
    try {
      const client = await h2Session(local.port, { ca: pki.ca.cert });
      const goaway = new Promise<number>((resolve) => client.once('goaway', (code) => resolve(code)));
      // A stream that outlives the idle timeout keeps the session.
      const slow = await h2Request(client, { ':method': 'GET', ':path': '/delay/600' });
      expect(slow.status).toBe(200);
      expect(await goaway).toBe(constants.NGHTTP2_NO_ERROR);
      await new Promise((r) => client.once('close', r));
      const labels = { listener: 'edge', reason: 'idle_timeout' };
      let closed: number | undefined;
      for (let i = 0; i < 100 && closed === undefined; i++) {
        closed = metricValue(await scrape(local.adminUrl), 'peregrine_http2_sessions_closed_total', labels);
        if (closed === undefined) await new Promise((r) => setTimeout(r, 20));
      }
      expect(closed).toBe(1);
    } finally {
      await local.close();
    }
  });

  it('sends GOAWAY on drain and lets the in-flight stream finish', async () => {
    const local = await startGateway({
      listeners: [tlsListener()],
      upstreams: { echo: { endpoints: [up.url] } },
      routes: [{ name: 'echo', upstream: 'echo' }],
    });
    const client = await h2Session(local.port, { ca: pki.ca.cert });
    const goaway = new Promise<number>((resolve) => client.once('goaway', (code) => resolve(code)));
    const inFlight = h2Request(client, { ':method': 'GET', ':path': '/delay/300' });
    await new Promise((r) => setTimeout(r, 50));
    const stopped = local.gateway.shutdown(5000);
    expect(await goaway).toBe(constants.NGHTTP2_NO_ERROR);
    const res = await inFlight;
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ delayed: 300 });
    await stopped;
    client.destroy();
  });
});

interface StreamOutcome {
  status?: number;
  rst?: number;
  /** The response's x-request-id, and its body (DATA frames). */
  requestId?: string;
  body?: string;
}

/**
 * Open one raw HTTP/2 connection, send a request header block per stream (1, 3, 5, ...), and
 * collect how each stream ended: the response status (decoded with the client-side HPACK state)
 * or the RST_STREAM code.
 */
function h2Outcomes(port: number, ca: string, blocks: Buffer[]): Promise<StreamOutcome[]> {
  return new Promise((resolve, reject) => {
    const outcomes: StreamOutcome[] = blocks.map(() => ({}));
    const bodies = new Map<StreamOutcome, string>();
    const decoder = new HpackDecoder(4096);
    const socket = h2Socket(port, ca);
    let buf = Buffer.alloc(0);
    // A stream is done at its RST_STREAM, or at the END_STREAM flag of its HEADERS or DATA.
    const ended = new Set<StreamOutcome>();
    const done = () => outcomes.every((o) => ended.has(o));
    const finish = () => {
      for (const [o, body] of bodies) o.body = body;
      resolve(outcomes);
    };
    const timer = setTimeout(() => {
      socket.destroy();
      finish();
    }, 5000);
    socket.on('secureConnect', () => {
      const out = [PREFACE, frame(4, 0, 0, Buffer.alloc(0))];
      for (const [i, block] of blocks.entries()) out.push(frame(1, 0x5, 1 + 2 * i, block));
      socket.write(Buffer.concat(out));
    });
    socket.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
        const len = buf.readUIntBE(0, 3);
        const type = buf[3];
        const flags = buf[4]!;
        const id = buf.readUInt32BE(5) & 0x7fffffff;
        const payload = buf.subarray(9, 9 + len);
        buf = buf.subarray(9 + len);
        const outcome = outcomes[(id - 1) / 2];
        if (type === 1) {
          decoder.decode(payload, {
            field: (name, value) => {
              if (name === ':status' && outcome) outcome.status = Number(value);
              if (name === 'x-request-id' && outcome) outcome.requestId = value;
            },
          });
          if (outcome && flags & 0x1) ended.add(outcome);
        } else if (type === 0 && outcome) {
          bodies.set(outcome, (bodies.get(outcome) ?? '') + payload.toString('utf8'));
          if (flags & 0x1) ended.add(outcome);
        } else if (type === 3 && outcome) {
          if (outcome.status === undefined) outcome.rst = payload.readUInt32BE(0);
          ended.add(outcome);
        }
      }
      if (done()) {
        clearTimeout(timer);
        socket.destroy();
        finish();
      }
    });
    socket.on('error', reject);
  });
}

describe('malformed HTTP/2 fields (RFC 9113 §8.2, threat catalogue D)', () => {
  const request = (...fields: Buffer[]) =>
    Buffer.concat([
      Buffer.from([0x82, 0x87]),
      literal(':path', '/fields'),
      literal(':authority', 'localhost'),
      ...fields,
    ]);
  // nghttp2 drops these silently and hands the rest of the request over: the gateway refuses it.
  const dropped: Record<string, Buffer> = {
    'CR in a value': literal('x-a', 'a\rb'),
    'LF in a value': literal('x-a', 'a\nInjected: yes'),
    'NUL in a value': literal('x-a', 'a\u0000b'),
    'NUL in a Huffman-coded value': literal('x-a', 'a\u0000b', true),
    'another control character in a value': literal('x-a', 'a\u0001b'),
    'DEL in a value': literal('x-a', 'a\u007fb'),
    'whitespace around a value': literal('x-a', ' a'),
    'a space in a name': literal('x a', '1'),
    'a colon inside a name': literal('x:a', '1'),
    'an empty name': literal('', '1'),
  };
  // nghttp2 resets these itself; the gateway counts them as refused too.
  const reset: Record<string, Buffer> = {
    'an upper case name': literal('X-Upper', '1'),
    connection: literal('connection', 'keep-alive'),
    'keep-alive': literal('keep-alive', 'timeout=5'),
    'proxy-connection': literal('proxy-connection', 'close'),
    'transfer-encoding': literal('transfer-encoding', 'chunked'),
    upgrade: literal('upgrade', 'h2c'),
    'te other than trailers': literal('te', 'gzip'),
  };

  it('refuses each request (400 or RST_STREAM PROTOCOL_ERROR), forwards none, counts all, and keeps the session', async () => {
    const seenBefore = up.requests.filter((r) => r.url === '/fields').length;
    const refusedBefore =
      metricValue(await scrape(gw.adminUrl), 'peregrine_local_responses_total', { code: 'BAD_REQUEST' }) ?? 0;
    const cases = [...Object.entries(dropped), ...Object.entries(reset)];
    const outcomes = await h2Outcomes(gw.port, pki.ca.cert, [
      ...cases.map(([, field]) => request(field)),
      // Then a good request on the same connection: the header compression state is intact.
      request(literal('x-a', 'fine'), literal('te', 'trailers')),
    ]);
    cases.forEach(([name], i) => {
      if (name in dropped) expect(outcomes[i]!.status, name).toBe(400);
      else expect(outcomes[i], name).toEqual({ rst: constants.NGHTTP2_PROTOCOL_ERROR });
    });
    expect(outcomes[cases.length]!.status).toBe(200);
    const forwarded = up.requests.filter((r) => r.url === '/fields');
    expect(forwarded.length - seenBefore).toBe(1);
    expect(forwarded[forwarded.length - 1]!.headers['x-a']).toBe('fine');
    const refusedAfter =
      metricValue(await scrape(gw.adminUrl), 'peregrine_local_responses_total', { code: 'BAD_REQUEST' }) ?? 0;
    expect(refusedAfter - refusedBefore).toBe(cases.length);
  });

  it('gives every refusal its ids and counts the bytes of the 400s; a reset stream gets an access line too', async () => {
    const linesBefore = gw.logs.access().length;
    const outcomes = await h2Outcomes(gw.port, pki.ca.cert, [
      request(dropped['CR in a value']!),
      request(reset['an upper case name']!),
    ]);
    const [answered, refused] = outcomes as [StreamOutcome, StreamOutcome];
    expect(answered.status).toBe(400);
    expect(refused.rst).toBe(constants.NGHTTP2_PROTOCOL_ERROR);
    const problem = JSON.parse(answered.body!) as { code: string; traceId?: string; requestId?: string };
    expect(problem.code).toBe('BAD_REQUEST');
    expect(problem.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(problem.requestId).toBe(answered.requestId);
    expect(gw.logs.access().find((l) => l.requestId === problem.requestId)).toMatchObject({
      status: 400,
      code: 'BAD_REQUEST',
      trace_id: problem.traceId,
      responseBytes: Buffer.byteLength(answered.body!),
    });
    // The reset one: its own line, with ids of its own and no body.
    const others = gw.logs
      .access()
      .slice(linesBefore)
      .filter((l) => l.code === 'BAD_REQUEST' && l.requestId !== problem.requestId);
    expect(others).toHaveLength(1);
    expect(others[0]).toMatchObject({ status: 400, responseBytes: 0 });
    expect(others[0]!.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(others[0]!.trace_id).toMatch(/^[0-9a-f]{32}$/);
  });
});

/**
 * A TCP relay between a test client and the gateway that can stop forwarding, as a client that
 * stops reading does, and then vanish: `rst` resets the gateway's side (a killed client whose
 * unread data makes its kernel answer RST), `blackhole` leaves it open and silent forever (the
 * peer's machine or a middlebox gone without FIN or RST).
 */
async function startRelay(target: number): Promise<{
  port: number;
  stall(): void;
  vanish(how: 'rst' | 'blackhole'): void;
  close(): Promise<void>;
}> {
  const pairs: { down: Socket; up: Socket }[] = [];
  const server: Server = createTcpServer((down) => {
    const up = netConnect(target, '127.0.0.1');
    down.pipe(up);
    up.pipe(down);
    down.on('error', () => {});
    up.on('error', () => {});
    pairs.push({ down, up });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    stall: () => {
      for (const { down, up } of pairs) {
        up.unpipe(down);
        up.pause();
      }
    },
    vanish: (how) => {
      for (const { down, up } of pairs) {
        down.destroy();
        if (how === 'rst') up.resetAndDestroy();
      }
    },
    close: async () => {
      for (const { down, up } of pairs) {
        down.destroy();
        up.destroy();
      }
      await new Promise((r) => server.close(r));
    },
  };
}

describe('HTTP/2 clients that vanish (threat catalogue C, D)', () => {
  let endless: TestUpstream;
  let local: TestGateway;

  beforeAll(async () => {
    // Streams until the gateway goes away, with backpressure.
    endless = await startUpstream((req, res) => {
      if (!req.url?.startsWith('/endless')) return false;
      const chunk = Buffer.alloc(64 * 1024, 0x7a);
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const pump = (): void => {
        while (!res.destroyed && res.write(chunk));
        if (!res.destroyed) res.once('drain', pump);
      };
      pump();
      return true;
    });
    local = await startGateway({
      listeners: [tlsListener({ http2: { unresponsiveTimeout: '1s' } })],
      // No total timeout and a long idle timeout: only the session guard can end these.
      upstreams: { main: { endpoints: [endless.url], timeouts: { request: 0, idle: '60s' } } },
      routes: [{ name: 'main', upstream: 'main' }],
    });
  });

  afterAll(async () => {
    await local?.close();
    await endless?.close();
  });

  const metric = async (name: string, labels: Record<string, string>): Promise<number> =>
    metricValue(await scrape(local.adminUrl), name, { listener: 'edge', ...labels }) ?? 0;

  for (const how of ['rst', 'blackhole'] as const) {
    it(`releases the session, its socket and the upstream request of a client that stops reading and vanishes (${how})`, async () => {
      const relay = await startRelay(local.port);
      const seenBefore = endless.requests.length;
      const closedBefore = await metric('peregrine_http2_sessions_closed_total', {});
      const unresponsiveBefore = await metric('peregrine_http2_sessions_closed_total', {
        reason: 'unresponsive',
      });
      // A client with a large window, as curl has: the gateway writes until TCP is full.
      const client = h2connect(`https://localhost:${local.port}`, {
        settings: { initialWindowSize: 2 ** 31 - 1 },
        createConnection: () => h2Socket(relay.port, pki.ca.cert),
      });
      client.on('error', () => {});
      client.on('connect', () => client.setLocalWindowSize(2 ** 31 - 1));
      const stream = client.request({ ':method': 'GET', ':path': `/endless/${how}` });
      stream.on('error', () => {});
      let received = 0;
      await new Promise<void>((resolve) =>
        stream.on('data', (c: Buffer) => {
          received += c.length;
          if (received > 1024 * 1024) resolve();
        }),
      );
      expect(await metric('peregrine_open_connections', {})).toBe(1);
      relay.stall();
      await new Promise((r) => setTimeout(r, 300));
      const vanishedAt = Date.now();
      relay.vanish(how);
      const seen = endless.requests[seenBefore]!;
      let open = 1;
      for (let i = 0; i < 100 && (open > 0 || !seen.aborted); i++) {
        await new Promise((r) => setTimeout(r, 50));
        open = await metric('peregrine_open_connections', {});
      }
      // Released within the bound (1 s, checked every 250 ms) plus what the buffers took to fill.
      expect(open).toBe(0);
      expect(seen.aborted).toBe(true);
      expect(Date.now() - vanishedAt).toBeLessThan(4000);
      expect(await metric('peregrine_http2_sessions_closed_total', {})).toBe(closedBefore + 1);
      // A reset is seen as soon as it arrives; a silent peer only by the liveness check.
      if (how === 'blackhole')
        expect(await metric('peregrine_http2_sessions_closed_total', { reason: 'unresponsive' })).toBe(
          unresponsiveBefore + 1,
        );
      // The attempt ended as the client's doing, never against the upstream.
      const attempts = await scrape(local.adminUrl);
      expect(
        metricValue(attempts, 'peregrine_upstream_attempts_total', { outcome: 'client_abort' }),
      ).toBeGreaterThan(0);
      expect(
        metricValue(attempts, 'peregrine_upstream_attempts_total', { outcome: 'timeout' }),
      ).toBeUndefined();
      const line = local.logs.access().find((l) => l.path === `/endless/${how}`);
      expect(line).toMatchObject({ code: 'CLIENT_CLOSED' });
      client.destroy();
      await relay.close();
    });
  }

  it('releases an idle session whose client vanished, once its GOAWAY went nowhere', async () => {
    const idle = await startGateway({
      listeners: [tlsListener({ http2: { idleTimeout: '300ms', unresponsiveTimeout: '1s' } })],
      upstreams: { main: { endpoints: [endless.url] } },
      routes: [{ name: 'main', upstream: 'main' }],
    });
    const relay = await startRelay(idle.port);
    try {
      const client = h2connect(`https://localhost:${idle.port}`, {
        createConnection: () => h2Socket(relay.port, pki.ca.cert),
      });
      client.on('error', () => {});
      expect((await h2Request(client, { ':method': 'GET', ':path': '/idle-then-gone' })).status).toBe(200);
      relay.stall();
      relay.vanish('blackhole');
      const open = async () =>
        metricValue(await scrape(idle.adminUrl), 'peregrine_open_connections', { listener: 'edge' }) ?? 0;
      let left = await open();
      for (let i = 0; i < 100 && left > 0; i++) {
        await new Promise((r) => setTimeout(r, 50));
        left = await open();
      }
      expect(left).toBe(0);
      client.destroy();
    } finally {
      await relay.close();
      await idle.close();
    }
  });

  it('keeps a live client whose stream waits quietly longer than the bound (it answers PINGs)', async () => {
    const slow = await startUpstream();
    const gw2 = await startGateway({
      listeners: [tlsListener({ http2: { unresponsiveTimeout: '1s' } })],
      upstreams: { main: { endpoints: [slow.url] } },
      routes: [{ name: 'main', upstream: 'main' }],
    });
    const quiet = await h2Session(gw2.port, { ca: pki.ca.cert });
    try {
      const res = await h2Request(quiet, { ':method': 'GET', ':path': '/delay/2500' });
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body)).toEqual({ delayed: 2500 });
    } finally {
      quiet.close();
      await gw2.close();
      await slow.close();
    }
  });
});

/**
 * A raw HTTP/2 client on one TLS connection: the preface, then `perStream(id, headerBlock)` for
 * `count` client streams, all written at once. Collects what the gateway sends until it closes
 * the connection: the GOAWAY error code and how many RST_STREAM REFUSED_STREAM frames came back.
 */
function rawH2(
  port: number,
  ca: string,
  perStream: (id: number, block: Buffer) => Buffer[],
  count: number,
  path = '/',
): Promise<{ goawayCode: number | undefined; refused: number }> {
  return new Promise((resolve, reject) => {
    const socket = h2Socket(port, ca);
    socket.on('secureConnect', () => {
      if (socket.alpnProtocol !== 'h2') {
        reject(new Error(`ALPN ${socket.alpnProtocol}`));
        return;
      }
      const authority = Buffer.from(`localhost:${port}`);
      // HPACK: :method GET (static index 2), :scheme https (7), then :path (name index 4) and
      // :authority (name index 1) as literals without indexing.
      const p = Buffer.from(path);
      const block = Buffer.concat([
        Buffer.from([0x82, 0x87, 0x04, p.length]),
        p,
        Buffer.from([0x01, authority.length]),
        authority,
      ]);
      const out: Buffer[] = [PREFACE, frame(4, 0, 0, Buffer.alloc(0))];
      for (let i = 0; i < count; i++) out.push(...perStream(1 + 2 * i, block));
      socket.write(Buffer.concat(out));
    });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => {});
    socket.on('close', () => {
      const buf = Buffer.concat(chunks);
      let goawayCode: number | undefined;
      let refused = 0;
      for (let off = 0; off + 9 <= buf.length; ) {
        const len = buf.readUIntBE(off, 3);
        const type = buf[off + 3];
        if (type === 7 && off + 17 <= buf.length) goawayCode = buf.readUInt32BE(off + 13);
        if (
          type === 3 &&
          off + 13 <= buf.length &&
          buf.readUInt32BE(off + 9) === constants.NGHTTP2_REFUSED_STREAM
        )
          refused++;
        off += 9 + len;
      }
      resolve({ goawayCode, refused });
    });
  });
}
