/**
 * Slow and vanished clients are the client's fault, never the upstream's: they must not move the
 * circuit breaker, outlier detection or the latency estimate. A genuinely slow upstream still does.
 * Real sockets on both sides; the upstream's state is read from the admin API.
 */
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createTestPki, removeCertFiles, writeCertFiles } from '../helpers/certs.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { h2Session } from '../helpers/tls-client.ts';
import { until } from '../helpers/until.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const opened: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.close();
});

async function upstream(handler?: Parameters<typeof startUpstream>[0]): Promise<TestUpstream> {
  const u = await startUpstream(handler);
  opened.push(u);
  return u;
}

const THRESHOLD = 3;

/** One upstream `u` with a breaker and outlier detection that trip after THRESHOLD failures. */
async function gateway(
  endpoint: string,
  timeouts: Record<string, string>,
  route: Record<string, unknown> = {},
  listeners?: Parameters<typeof startGateway>[0]['listeners'],
): Promise<TestGateway> {
  const g = await startGateway({
    ...(listeners ? { listeners } : undefined),
    upstreams: {
      u: {
        endpoints: [endpoint],
        timeouts,
        retries: { maxAttempts: 1 },
        circuitBreaker: { consecutiveFailures: THRESHOLD, openDuration: '30s' },
        outlierDetection: { consecutiveGatewayErrors: THRESHOLD, maxEjectionPercent: 100 },
      } as never,
    },
    routes: [{ name: 'r', upstream: 'u', ...route }],
  });
  opened.push(g);
  return g;
}

interface UpstreamView {
  circuitBreaker: {
    state: string;
    consecutiveFailures: number;
    windowRequests: number;
    windowFailures: number;
  };
  endpoints: { ewmaMs: number; ejection: { ejected: boolean; consecutiveGatewayErrors: number } }[];
}

async function view(gw: TestGateway): Promise<UpstreamView> {
  const body = (await (await fetch(`${gw.adminUrl}/v1/upstreams`)).json()) as { upstreams: UpstreamView[] };
  return body.upstreams[0]!;
}

async function attempts(gw: TestGateway): Promise<Record<string, number>> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const counts: Record<string, number> = {};
  for (const m of text.matchAll(
    /^peregrine_upstream_attempts_total\{[^}]*outcome="([a-z_]+)"[^}]*\} (\d+)/gm,
  ))
    counts[m[1]!] = (counts[m[1]!] ?? 0) + Number(m[2]);
  return counts;
}

/**
 * A healthy upstream behind a gateway, one request served (so the latency estimate is a measured
 * one), and the upstream's state at that point.
 */
async function warmed(
  timeouts: Record<string, string>,
  route?: Record<string, unknown>,
): Promise<{ up: TestUpstream; gw: TestGateway; before: UpstreamView }> {
  const up = await upstream();
  const gw = await gateway(up.url, timeouts, route);
  expect((await fetch(`${gw.url}/warm`)).status).toBe(200);
  return { up, gw, before: await view(gw) };
}

/** The upstream's state as nothing but neutral results would leave it (after one warm-up success). */
function expectUntouched(before: UpstreamView, after: UpstreamView): void {
  expect(after.circuitBreaker).toMatchObject({
    state: 'closed',
    consecutiveFailures: 0,
    windowFailures: 0,
    windowRequests: before.circuitBreaker.windowRequests,
  });
  expect(after.endpoints[0]!.ejection).toMatchObject({ ejected: false, consecutiveGatewayErrors: 0 });
  // Without new results the estimate only decays; a failure would have multiplied it.
  expect(after.endpoints[0]!.ewmaMs).toBeLessThanOrEqual(before.endpoints[0]!.ewmaMs);
}

function raw(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    s.on('error', reject);
  });
}

/**
 * GET `path` and read the response at about `bytesPerTick` every 20 ms for `forMs`, then read the
 * rest at full speed until the connection closes. Resolves with the bytes read.
 */
async function slowRead(port: number, path: string, bytesPerTick: number, forMs: number): Promise<number> {
  const s = await raw(port);
  s.pause();
  s.on('error', () => {});
  s.write(`GET ${path} HTTP/1.1\r\nHost: test\r\n\r\n`);
  let read = 0;
  const tick = setInterval(() => {
    const chunk = s.read(Math.min(bytesPerTick, s.readableLength || bytesPerTick)) as Buffer | null;
    if (chunk) read += chunk.length;
  }, 20);
  await new Promise((resolve) => setTimeout(resolve, forMs));
  clearInterval(tick);
  s.on('data', (c: Buffer) => {
    read += c.length;
  });
  s.resume();
  await new Promise((resolve) => s.on('close', resolve));
  return read;
}

/** GET `path`, wait for the first `bytes` of the response, then vanish (close the socket). */
async function readThenVanish(port: number, path: string, bytes: number): Promise<void> {
  const s = await raw(port);
  s.write(`GET ${path} HTTP/1.1\r\nHost: test\r\n\r\n`);
  let read = 0;
  await new Promise<void>((resolve) => {
    s.on('data', (c: Buffer) => {
      read += c.length;
      if (read >= bytes) resolve();
    });
  });
  s.destroy();
}

describe('slow readers', () => {
  it('a client reading slowly is cut at timeouts.request without counting against the upstream', async () => {
    const { up, gw, before } = await warmed({ request: '1500ms' });

    // 32 MiB at full speed from the upstream; each client takes about 100 KB/s, for longer than
    // timeouts.request. The buffers in between fill within the first few hundred ms.
    const reads = await Promise.all(
      Array.from({ length: THRESHOLD + 1 }, () => slowRead(gw.port, '/bytes/33554432', 2048, 2500)),
    );
    for (const n of reads) expect(n).toBeLessThan(33_554_432);
    expect(up.requests).toHaveLength(THRESHOLD + 2);

    expectUntouched(before, await view(gw));
    const outcomes = await attempts(gw);
    expect(outcomes.client_timeout).toBe(THRESHOLD + 1);
    expect(outcomes.timeout).toBeUndefined();
    // The next client is served, not refused with CIRCUIT_OPEN.
    expect((await fetch(`${gw.url}/after`)).status).toBe(200);
  });
});

describe('HTTP/2 clients that stop reading', () => {
  it('streams the client never reads are cut at timeouts.request without counting against the upstream', async () => {
    const pki = await createTestPki();
    const files = writeCertFiles(pki.server, pki.ca.cert);
    opened.push({ close: async () => removeCertFiles() });
    const up = await upstream();
    const gw = await gateway(up.url, { request: '1500ms' }, {}, [
      { name: 'edge', address: '127.0.0.1:0', tls: { cert: files.cert, key: files.key } },
    ] as never);
    const session = await h2Session(gw.port, { ca: pki.ca.cert });
    opened.push({ close: async () => void session.destroy() });
    const warm = session.request({ ':path': '/warm' });
    warm.resume();
    await new Promise((resolve) => warm.on('close', resolve));
    const before = await view(gw);

    // Streams on one session: the client takes the head and then never reads, so its flow-control
    // window stays shut and the gateway holds the upstream back (as for a client that vanished
    // without a word until the session guard notices).
    const closed = Array.from({ length: THRESHOLD + 1 }, () => {
      const stream = session.request({ ':path': '/bytes/33554432' });
      stream.pause();
      return new Promise<number>((resolve) => {
        let status = 0;
        stream.on('response', (h) => {
          status = Number(h[':status']);
        });
        stream.on('error', () => {});
        stream.on('close', () => resolve(status));
      });
    });
    expect(await Promise.all(closed)).toEqual(Array(THRESHOLD + 1).fill(200));

    expectUntouched(before, await view(gw));
    expect(await attempts(gw)).toEqual({ success: 1, client_timeout: THRESHOLD + 1 });
  });
});

describe('vanished clients (HTTP/1.1)', () => {
  it('a client that closes mid-download counts as neither success nor failure', async () => {
    const { up, gw, before } = await warmed({ request: '10s' });

    for (let i = 0; i < THRESHOLD + 1; i++) await readThenVanish(gw.port, '/bytes/33554432', 256 * 1024);
    await until('the upstream saw every download aborted', () => up.abortedCount() === THRESHOLD + 1);
    await until('every attempt reported', async () => (await attempts(gw)).client_abort === THRESHOLD + 1);

    expectUntouched(before, await view(gw));
    expect(await attempts(gw)).toEqual({ success: 1, client_abort: THRESHOLD + 1 });
  });

  // A vanished client's connection ends with a reset (it had unread data, or a middlebox gave up)
  // or with a plain FIN (its process exited mid-upload): the body is cut short either way.
  it.each([
    ['reset', (s: Socket) => s.resetAndDestroy()],
    ['closed', (s: Socket) => s.destroy()],
  ] as const)(
    'a client whose connection is %s mid-upload counts as neither success nor failure',
    async (_how, vanish) => {
      const { up, gw, before } = await warmed({ request: '1s' });

      for (let i = 0; i < THRESHOLD + 1; i++) {
        const s = await raw(gw.port);
        s.on('error', () => {});
        s.write(`POST /sink HTTP/1.1\r\nHost: test\r\nContent-Length: 1048576\r\n\r\n`);
        s.write(Buffer.alloc(128 * 1024, 0x61));
        await until('the upstream got the request', () => up.requests.length === i + 2);
        vanish(s);
        await until('the attempt reported', async () => {
          const a = await attempts(gw);
          return Object.values(a).reduce((x, y) => x + y, 0) === i + 2;
        });
      }

      expectUntouched(before, await view(gw));
      const { success, ...rest } = await attempts(gw);
      expect(success).toBe(1);
      for (const outcome of Object.keys(rest)) expect(outcome).toMatch(/^client_/);
    },
  );
});

describe('slow uploaders', () => {
  it('a response timeout while the client is still sending its body does not count against the upstream', async () => {
    const { up, gw, before } = await warmed({ response: '300ms', request: '10s' });

    const statuses = await Promise.all(
      Array.from({ length: THRESHOLD + 1 }, async () => {
        const s = await raw(gw.port);
        s.on('error', () => {});
        s.write(`POST /sink HTTP/1.1\r\nHost: test\r\nContent-Length: 1048576\r\n\r\n`);
        const drip = setInterval(() => s.write('x'), 50);
        const head = await new Promise<string>((resolve) => {
          let got = '';
          s.on('data', (c: Buffer) => {
            got += c.toString('latin1');
            if (got.includes('\r\n\r\n')) resolve(got);
          });
          s.on('close', () => resolve(got));
        });
        clearInterval(drip);
        s.destroy();
        return Number(head.split(' ')[1]);
      }),
    );
    // The client still gets its 504, as before; every request reached the upstream once.
    expect(statuses).toEqual(Array(THRESHOLD + 1).fill(504));
    expect(up.requests).toHaveLength(THRESHOLD + 2);
    await until('every attempt reported', async () => (await attempts(gw)).client_timeout === THRESHOLD + 1);
    expectUntouched(before, await view(gw));
    expect((await attempts(gw)).timeout).toBeUndefined();
  });
});

describe('an upstream that does not read the request body', () => {
  it('is the one a response timeout counts against', async () => {
    const up = await upstream((req) => {
      req.pause();
      return true;
    });
    const gw = await gateway(up.url, { response: '300ms', request: '10s' });
    const s = await raw(gw.port);
    s.on('error', () => {});
    const total = 64 * 1024 * 1024;
    s.write(`POST /stuck HTTP/1.1\r\nHost: test\r\nContent-Length: ${total}\r\n\r\n`);
    // The client sends as fast as it is allowed to: the upstream, not the client, is the bottleneck.
    const chunk = Buffer.alloc(1024 * 1024);
    let sent = 0;
    const pump = (): void => {
      while (sent < total && !s.destroyed) {
        sent += chunk.length;
        if (!s.write(chunk)) {
          s.once('drain', pump);
          return;
        }
      }
    };
    pump();
    await until('the attempt reported', async () => (await attempts(gw)).timeout === 1);
    s.destroy();
    expect(sent).toBeLessThan(total);
    expect((await view(gw)).circuitBreaker).toMatchObject({ consecutiveFailures: 1, windowFailures: 1 });
  });
});

describe('invalid request bodies', () => {
  it('a chunked body over the route limit, cut mid-attempt, is the client’s error, not the upstream’s', async () => {
    const { gw, before } = await warmed({ request: '10s' }, { limits: { maxBodySize: 1024 } });
    for (let i = 0; i < THRESHOLD + 1; i++) {
      const s = await raw(gw.port);
      s.on('error', () => {});
      const head = new Promise<string>((resolve) => {
        let got = '';
        s.on('data', (c: Buffer) => {
          got += c.toString('latin1');
          if (got.includes('\r\n\r\n')) resolve(got);
        });
      });
      s.write(`POST /sink HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n`);
      s.write(`800\r\n${'x'.repeat(2048)}\r\n`);
      expect((await head).split(' ')[1]).toBe('413');
      s.destroy();
    }
    await until('every attempt reported', async () => (await attempts(gw)).client_error === THRESHOLD + 1);
    expectUntouched(before, await view(gw));
    expect(await attempts(gw)).toEqual({ success: 1, client_error: THRESHOLD + 1 });
  });
});

describe('a genuinely slow upstream still counts', () => {
  it('a body that stalls while the client reads trips the breaker and ejects the endpoint', async () => {
    const up = await upstream();
    const gw = await gateway(up.url, { idle: '150ms', request: '10s' });
    for (let i = 0; i < THRESHOLD; i++) {
      const res = await fetch(`${gw.url}/slow-body/2000`);
      await expect(res.text()).rejects.toThrow();
    }
    const after = await view(gw);
    expect(after.circuitBreaker.state).toBe('open');
    expect(after.endpoints[0]!.ejection.ejected).toBe(true);
    expect((await attempts(gw)).timeout).toBe(THRESHOLD);
    expect((await fetch(`${gw.url}/next`)).headers.get('x-peregrine-reason')).toBe('CIRCUIT_OPEN');
  });

  it('an upstream too slow for timeouts.request while the client reads trips the breaker', async () => {
    // A chunk every 50 ms: never idle for long, but never done within the total timeout.
    const up = await upstream((_req, res) => {
      res.writeHead(200);
      const t = setInterval(() => res.write('.'), 50);
      res.on('close', () => clearInterval(t));
      return true;
    });
    const gw = await gateway(up.url, { idle: '1s', request: '400ms' });
    for (let i = 0; i < THRESHOLD; i++) {
      const res = await fetch(`${gw.url}/trickle`);
      await expect(res.text()).rejects.toThrow();
    }
    const after = await view(gw);
    expect(after.circuitBreaker.state).toBe('open');
    expect(after.endpoints[0]!.ejection.ejected).toBe(true);
    expect((await attempts(gw)).timeout).toBe(THRESHOLD);
  });
});
