/**
 * Request normalisation and limits at the gateway's own boundary, over raw sockets
 * (threat catalogue groups A, B and C).
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { parseHead, rawExchange, rawRequest, statusCodes } from '../helpers/raw-http.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

let up: TestUpstream;
let other: TestUpstream;
let gw: TestGateway;

beforeAll(async () => {
  up = await startUpstream();
  other = await startUpstream();
  gw = await startGateway({
    listeners: [
      { name: 'edge', address: '127.0.0.1:0', limits: { headersTimeout: '1s', maxHeaderSize: '8KiB' } },
    ],
    upstreams: { main: { endpoints: [up.url] }, other: { endpoints: [other.url] } },
    routes: [
      { name: 'evil-host', match: { host: 'evil.example' }, upstream: 'other' },
      { name: 'small', match: { path: '/small' }, upstream: 'main', limits: { maxBodySize: '1KiB' } },
      { name: 'all', match: { path: '/' }, upstream: 'main' },
    ],
  });
});

afterAll(async () => {
  await gw?.close();
  await up?.close();
  await other?.close();
});

const last = () => up.requests[up.requests.length - 1]!;

describe('request targets', () => {
  it('routes an absolute-form target by Host and forwards origin-form', async () => {
    const raw = await rawRequest(
      gw.port,
      'GET http://evil.example/admin?x=1 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n',
    );
    expect(parseHead(raw).status).toBe(200);
    expect(other.requests).toHaveLength(0);
    expect(last().url).toBe('/admin?x=1');
    expect(last().headers.host).toBe('a.test');
  });

  it('routes and forwards the normalised path', async () => {
    await rawRequest(gw.port, 'GET /a/./b/../%7Euser//x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    expect(last().url).toBe('/a/~user/x');
  });

  it('rejects encoded slash and backslash traversals, servlet ..; traversals and control characters', async () => {
    const before = up.requests.length;
    for (const target of [
      '/pub/..%2Fadmin',
      '/pub/%5C..%5Cadmin',
      '/pub/..;/admin',
      '/pub/%2e%2e;x/admin',
      '/a%00b',
      '/a\\b',
    ]) {
      const raw = await rawRequest(gw.port, `GET ${target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`);
      expect(parseHead(raw).status, target).toBe(400);
    }
    expect(up.requests.length).toBe(before);
  });
});

describe('idle keep-alive connections', () => {
  it('are closed by the gateway after limits.keepAliveTimeout, and not before', async () => {
    const idle = await startGateway({
      listeners: [{ name: 'edge', address: '127.0.0.1:0', limits: { keepAliveTimeout: '300ms' } }],
      upstreams: { main: { endpoints: [up.url] } },
      routes: [{ name: 'all', match: { path: '/' }, upstream: 'main' }],
    });
    try {
      const started = Date.now();
      const { raw, closedByServer } = await rawExchange(
        idle.port,
        'GET /idle HTTP/1.1\r\nHost: a\r\n\r\n',
        5000,
      );
      const elapsed = Date.now() - started;
      expect(statusCodes(raw)).toEqual([200]);
      expect(parseHead(raw).headers).toContainEqual(['connection', 'keep-alive']);
      expect(closedByServer).toBe(true);
      // Generous bounds: Node checks idle sockets on a timer, and CI machines are slow.
      expect(elapsed).toBeGreaterThanOrEqual(250);
      expect(elapsed).toBeLessThan(4000);
    } finally {
      await idle.close();
    }
  });
});

describe('requests pipelined after a response that closes the connection (RFC 9112 §9.6)', () => {
  const next = 'POST /after HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi';

  it('the client asked for close: the first is answered, the next never reaches an upstream', async () => {
    const before = up.requests.length;
    const { raw, closedByServer } = await rawExchange(
      gw.port,
      `GET /first HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n${next}`,
    );
    expect(statusCodes(raw)).toEqual([200]);
    expect(closedByServer).toBe(true);
    expect(up.requests.slice(before).map((r) => r.url)).toEqual(['/first']);
  });

  const dropped = async (): Promise<number> => {
    const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    const m = /^peregrine_pipelined_requests_dropped_total\{listener="edge"\} (\d+)$/m.exec(text);
    return m ? Number(m[1]) : 0;
  };

  it('the gateway refused the first with 400 + close: the next never reaches an upstream, and is counted', async () => {
    const before = up.requests.length;
    const droppedBefore = await dropped();
    const { raw, closedByServer } = await rawExchange(
      gw.port,
      `GET /a%2fb HTTP/1.1\r\nHost: a\r\n\r\n${next}`,
    );
    expect(statusCodes(raw)).toEqual([400]);
    expect(parseHead(raw).headers).toContainEqual(['connection', 'close']);
    expect(closedByServer).toBe(true);
    expect(up.requests.length).toBe(before);
    expect(await dropped()).toBe(droppedBefore + 1);
  });

  it("a missing Host gets the gateway's own problem+json 400, with a request id", async () => {
    const { raw } = await rawExchange(gw.port, 'GET / HTTP/1.1\r\n\r\n');
    const head = parseHead(raw);
    expect(head.status).toBe(400);
    expect(head.headers).toContainEqual(['content-type', 'application/problem+json']);
    expect(head.headers.some(([k]) => k === 'x-request-id')).toBe(true);
    expect(raw).toContain('Host header');
  });

  it('HTTP/1.0 may omit Host', async () => {
    const { raw } = await rawExchange(gw.port, 'GET /ten HTTP/1.0\r\n\r\n');
    expect(statusCodes(raw)).toEqual([200]);
    expect(last().url).toBe('/ten');
  });
});

describe('HTTP/1.1 framing (strict parser)', () => {
  const bad: Record<string, string> = {
    'obs-fold': 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n',
    'space before colon': 'GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n',
    'NUL in value': 'GET / HTTP/1.1\r\nHost: a\r\nX-A: a\u0000b\r\n\r\n',
    'bad token in name': 'GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n',
    'bad version': 'GET / HTTP/9.1\r\nHost: a\r\n\r\n',
    'obfuscated TE':
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\nabc',
    'TE identity,chunked with CL':
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n',
    'two TE headers':
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n',
    'missing Host': 'GET / HTTP/1.1\r\n\r\n',
    'bare LF line endings': 'GET / HTTP/1.1\nHost: a\nX-A: 1\n\n',
    'bare CR in a header line': 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\rX-B: 2\r\n\r\n',
    'control character in a value': 'GET / HTTP/1.1\r\nHost: a\r\nX-A: a\u0001b\r\n\r\n',
    'DEL in a value': 'GET / HTTP/1.1\r\nHost: a\r\nX-A: a\u007fb\r\n\r\n',
    'vertical tab before chunked':
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \u000bchunked\r\nContent-Length: 3\r\n\r\nabc',
    'header line starting with whitespace': 'GET / HTTP/1.1\r\n Host: a\r\nX-A: 1\r\n\r\n',
  };
  for (const [name, payload] of Object.entries(bad)) {
    it(`answers 400 and closes for ${name}`, async () => {
      const before = up.requests.length;
      // A second, valid request after the bad one: it must get no answer, the connection is closed.
      const { raw, closedByServer } = await rawExchange(
        gw.port,
        `${payload}GET / HTTP/1.1\r\nHost: a\r\n\r\n`,
      );
      expect(statusCodes(raw)).toEqual([400]);
      expect(closedByServer).toBe(true);
      expect(up.requests.length).toBe(before);
    });
  }

  it('answers a pipeline good, good, bad with 200, 200, 400 and closes', async () => {
    const good = 'GET /p HTTP/1.1\r\nHost: a\r\n\r\n';
    const raw = await rawRequest(
      gw.port,
      `${good}${good}GET /p HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n${good}`,
    );
    expect(statusCodes(raw)).toEqual([200, 200, 400]);
  });

  it('answers 431 for a request head over the limit', async () => {
    const raw = await rawRequest(
      gw.port,
      `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(10_000)}\r\n\r\n`,
    );
    expect(parseHead(raw).status).toBe(431);
  });

  it('answers 408 to a slowloris client at the headers timeout', async () => {
    const started = Date.now();
    const raw = await new Promise<string>((resolve, reject) => {
      const socket = connect(gw.port, '127.0.0.1');
      let data = '';
      const drip = setInterval(() => socket.write('X-Drip: 1\r\n'), 200);
      socket.on('connect', () => socket.write('GET / HTTP/1.1\r\nHost: a\r\n'));
      socket.on('data', (c: Buffer) => {
        data += c.toString();
      });
      socket.on('close', () => {
        clearInterval(drip);
        resolve(data);
      });
      socket.on('error', (e) => {
        clearInterval(drip);
        if (data) resolve(data);
        else reject(e);
      });
    });
    expect(parseHead(raw).status).toBe(408);
    // 1 s configured; generous upper bound for a loaded machine.
    expect(Date.now() - started).toBeLessThan(6000);
  });
});

describe('HTTP/1.1 request body framing after the head (threat catalogue A)', () => {
  let sink: TestUpstream;
  let local: TestGateway;
  let upstreamOpen = 0;
  let upstreamConnections = 0;

  beforeAll(async () => {
    // Reads the body and answers once it ends: a broken body never ends.
    sink = await startUpstream((req, res) => {
      if (!req.url?.startsWith('/upload')) return false;
      req.resume();
      req.on('end', () => res.end('stored'));
      return true;
    });
    sink.server.on('connection', (socket) => {
      upstreamOpen++;
      upstreamConnections++;
      socket.once('close', () => upstreamOpen--);
    });
    local = await startGateway({
      listeners: [{ name: 'edge', address: '127.0.0.1:0' }],
      upstreams: {
        // One connection: a request that held it would make every other one wait.
        main: { endpoints: [sink.url], pool: { connections: 1 }, timeouts: { response: '10s' } },
      },
      routes: [{ name: 'all', match: { path: '/' }, upstream: 'main' }],
    });
  });

  afterAll(async () => {
    await local?.close();
    await sink?.close();
  });

  const head = 'POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n';
  const followUp = async (): Promise<number> => {
    const started = Date.now();
    const raw = await rawRequest(local.port, 'GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    expect(statusCodes(raw)).toEqual([200]);
    return Date.now() - started;
  };

  it('refuses a Transfer-Encoding other than chunked at the head, before any upstream connection', async () => {
    for (const te of ['xchunked', 'gzip, chunked', 'chunked, identity', 'identity']) {
      const connectionsBefore = upstreamConnections;
      const seenBefore = sink.requests.length;
      const started = Date.now();
      const { raw, closedByServer } = await rawExchange(
        local.port,
        `POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ${te}\r\n\r\n`,
      );
      expect(statusCodes(raw), te).toEqual([400]);
      expect(parseHead(raw).headers, te).toContainEqual(['connection', 'close']);
      expect(closedByServer, te).toBe(true);
      expect(Date.now() - started, te).toBeLessThan(1500);
      expect(sink.requests.length, te).toBe(seenBefore);
      expect(upstreamConnections, te).toBe(connectionsBefore);
    }
    // chunked itself, in any letter case, is fine.
    const ok = await rawRequest(
      local.port,
      'POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n2\r\nok\r\n0\r\n\r\n',
    );
    expect(statusCodes(ok)).toEqual([200]);
  });

  const broken: Record<string, string> = {
    'a chunk-size line ending in bare LF': '5\nhello\r\n0\r\n\r\n',
    'a chunk size that is not hex': 'zz\r\nhello\r\n0\r\n\r\n',
    'a chunk longer than its declared size': '3\r\nhello\r\n0\r\n\r\n',
  };
  for (const [name, rest] of Object.entries(broken)) {
    it(`aborts the upstream attempt at once for ${name}: 400, closed, upstream connection destroyed, pool free`, async () => {
      const seenBefore = sink.requests.length;
      const started = Date.now();
      const { raw, closedByServer } = await rawExchange(local.port, head, 1500, {
        ready: () => sink.requests.length > seenBefore,
        payload: `${rest}GET /pipelined HTTP/1.1\r\nHost: a\r\n\r\n`,
      });
      const ms = Date.now() - started;
      // The upstream had the head (and the first chunk) when the body broke.
      expect(sink.requests.length).toBe(seenBefore + 1);
      expect(statusCodes(raw)).toEqual([400]);
      expect(parseHead(raw).headers).toContainEqual(['connection', 'close']);
      expect(raw).toContain('BAD_REQUEST');
      expect(closedByServer).toBe(true);
      // Nothing waited for timeouts.response (10 s).
      expect(ms).toBeLessThan(2000);
      // The upstream connection carrying the half-sent request was destroyed, never reused.
      for (let i = 0; i < 100 && upstreamOpen > 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(upstreamOpen).toBe(0);
      expect(sink.requests[seenBefore]!.aborted).toBe(true);
      // The pool's only connection is free: the next request is served at once.
      expect(await followUp()).toBeLessThan(1000);
      expect(sink.requests.map((r) => r.url)).not.toContain('/pipelined');
    });
  }

  it('does the same when the head and the broken body arrive together', async () => {
    const seenBefore = sink.requests.length;
    const { raw, closedByServer } = await rawExchange(
      local.port,
      'POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n',
    );
    expect(statusCodes(raw)).toEqual([400]);
    expect(closedByServer).toBe(true);
    for (let i = 0; i < 100 && upstreamOpen > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(upstreamOpen).toBe(0);
    expect(sink.requests.slice(seenBefore).every((r) => r.aborted)).toBe(true);
    expect(await followUp()).toBeLessThan(1000);
  });

  it('cuts the client connection when the upstream had already answered', async () => {
    const early = await startUpstream((req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('early\n');
      req.resume();
      req.on('end', () => res.end('done'));
      return true;
    });
    const gw2 = await startGateway({
      upstreams: { main: { endpoints: [early.url], timeouts: { idle: '10s' } } },
      routes: [{ name: 'all', upstream: 'main' }],
    });
    try {
      const { raw, closedByServer } = await rawExchange(gw2.port, head, 1500, {
        ready: () => early.requests.length > 0,
        payload: 'zz\r\nhello\r\n0\r\n\r\n',
      });
      // One response, its head already sent, then cut: never a complete-looking response.
      expect(statusCodes(raw)).toEqual([200]);
      expect(raw).not.toContain('done');
      expect(closedByServer).toBe(true);
      for (let i = 0; i < 100 && !early.requests[0]!.aborted; i++)
        await new Promise((r) => setTimeout(r, 10));
      expect(early.requests[0]!.aborted).toBe(true);
    } finally {
      await gw2.close();
      await early.close();
    }
  });

  it('ends a request whose body outlives limits.requestTimeout with 408, and aborts its attempt', async () => {
    const slow = await startGateway({
      listeners: [
        {
          name: 'edge',
          address: '127.0.0.1:0',
          limits: { requestTimeout: '600ms', headersTimeout: '500ms' },
        },
      ],
      upstreams: { main: { endpoints: [sink.url], timeouts: { response: '10s' } } },
      routes: [{ name: 'all', upstream: 'main' }],
    });
    try {
      const seenBefore = sink.requests.length;
      const { raw, closedByServer } = await rawExchange(slow.port, head, 5000);
      expect(statusCodes(raw)).toEqual([408]);
      expect(parseHead(raw).headers).toContainEqual(['connection', 'close']);
      expect(closedByServer).toBe(true);
      for (let i = 0; i < 100 && !sink.requests[seenBefore]?.aborted; i++)
        await new Promise((r) => setTimeout(r, 10));
      expect(sink.requests[seenBefore]!.aborted).toBe(true);
    } finally {
      await slow.close();
    }
  });

  it('counts the refusals as 400 BAD_REQUEST and never against the upstream', async () => {
    const text = await (await fetch(`${local.adminUrl}/metrics`)).text();
    expect(text).toMatch(/peregrine_local_responses_total\{[^}]*code="BAD_REQUEST"[^}]*\} [1-9]/);
    expect(text).not.toMatch(/peregrine_upstream_attempts_total\{[^}]*outcome="(other|reset|timeout)"/);
    const lines = local.logs.access().filter((l) => l.path === '/upload' && l.status === 400);
    expect(lines.length).toBeGreaterThanOrEqual(4);
    expect(lines.every((l) => l.code === 'BAD_REQUEST')).toBe(true);
  });
});

describe('header policy', () => {
  it('drops headers with underscores by default', async () => {
    await rawRequest(
      gw.port,
      'GET /u HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\nmy_header: x\r\nConnection: close\r\n\r\n',
    );
    const names = last()
      .rawHeaders.filter((_, i) => i % 2 === 0)
      .map((n) => n.toLowerCase());
    expect(names).not.toContain('x_forwarded_for');
    expect(names).not.toContain('my_header');
    expect(last().headers['x-forwarded-for']).toBe('127.0.0.1');
  });

  it('rejects them with 400 when the listener says reject', async () => {
    const strict = await startGateway({
      listeners: [{ name: 'edge', address: '127.0.0.1:0', limits: { headersWithUnderscores: 'reject' } }],
      upstreams: { main: { endpoints: [up.url] } },
      routes: [{ name: 'all', upstream: 'main' }],
    });
    try {
      const raw = await rawRequest(
        strict.port,
        'GET / HTTP/1.1\r\nHost: a\r\nmy_header: x\r\nConnection: close\r\n\r\n',
      );
      expect(parseHead(raw).status).toBe(400);
    } finally {
      await strict.close();
    }
  });
});

describe('body limits', () => {
  it('answers 413 for a declared Content-Length over the route limit before contacting the upstream', async () => {
    const before = up.requests.length;
    const raw = await rawRequest(
      gw.port,
      `POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n${'x'.repeat(2000)}`,
    );
    expect(parseHead(raw).status).toBe(413);
    expect(up.requests.length).toBe(before);
  });

  it('cuts a chunked body at the limit with 413 and the upstream never receives it all', async () => {
    let upstreamBytes = 0;
    const counting = await startUpstream((req, res) => {
      req.on('data', (c: Buffer) => {
        upstreamBytes += c.length;
      });
      req.on('end', () => res.end('done'));
      return true;
    });
    const local = await startGateway({
      upstreams: { main: { endpoints: [counting.url] } },
      routes: [{ name: 'small', upstream: 'main', limits: { maxBodySize: '1KiB' } }],
    });
    try {
      const chunk = 'y'.repeat(600);
      const body = `258\r\n${chunk}\r\n258\r\n${chunk}\r\n258\r\n${chunk}\r\n0\r\n\r\n`;
      const raw = await rawRequest(
        local.port,
        `POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${body}`,
      );
      expect(parseHead(raw).status).toBe(413);
      expect(upstreamBytes).toBeLessThan(1800);
      // Within the limit it goes through.
      const ok = await rawRequest(
        local.port,
        `POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n258\r\n${chunk}\r\n0\r\n\r\n`,
      );
      expect(parseHead(ok).status).toBe(200);
    } finally {
      await local.close();
      await counting.close();
    }
  });
});

describe('lenient parsing is never enabled', () => {
  it('has no insecureHTTPParser: true or --insecure-http-parser anywhere in the shipped code', () => {
    const roots = ['src', 'bin', 'config', 'deployment'];
    // main.ts names the flag to refuse it.
    const guard = join('src', 'main.ts');
    const files = ['package.json', 'Dockerfile'];
    const walk = (dir: string): void => {
      for (const name of readdirSync(dir)) {
        const p = join(dir, name);
        if (statSync(p).isDirectory()) walk(p);
        else files.push(p);
      }
    };
    for (const r of roots) walk(r);
    for (const f of files) {
      const text = readFileSync(f, 'utf8');
      expect(text, f).not.toMatch(/insecureHTTPParser\s*:\s*true/);
      if (f !== guard) expect(text, f).not.toContain('--insecure-http-parser');
      expect(text, f).not.toMatch(/lenient(Flags|Parsing)\s*:/);
    }
  });

  it('refuses to start when Node runs with --insecure-http-parser', () => {
    const result = spawnSync(
      process.execPath,
      ['--insecure-http-parser', 'src/main.ts', 'run', '--config', 'config/gateway.yaml'],
      {
        encoding: 'utf8',
        timeout: 20_000,
      },
    );
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('insecure-http-parser');
    const viaEnv = spawnSync(process.execPath, ['src/main.ts', 'run', '--config', 'config/gateway.yaml'], {
      encoding: 'utf8',
      timeout: 20_000,
      env: { ...process.env, NODE_OPTIONS: '--insecure-http-parser' },
    });
    expect(viaEnv.status).toBe(2);
  });
});
