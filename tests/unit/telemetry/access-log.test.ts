import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { type TelemetryConfig, TelemetrySchema } from '../../../src/config/schema.ts';
import { type AccessLogRecord, accessRecord, createAccessLog } from '../../../src/telemetry/access-log.ts';
import { FLUSH_DELAY_MS, LogDestination } from '../../../src/telemetry/log-destination.ts';
import { createLogger } from '../../../src/telemetry/logger.ts';
import { createTelemetry } from '../../../src/telemetry/telemetry.ts';
import { memoryStream } from './memory-stream.ts';

function cfg(input: Record<string, unknown> = {}): TelemetryConfig {
  return TelemetrySchema.parse({ serviceName: 'peregrine-test', ...input });
}

const RECORD: AccessLogRecord = {
  listener: 'edge',
  route: 'users',
  upstream: 'users-svc',
  endpoint: 'http://10.0.0.5:8080',
  method: 'GET',
  path: '/users/42',
  status: 200,
  durationMs: 1.234,
  upstreamDurationMs: 0.9,
  requestBytes: 0,
  responseBytes: 512,
  traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
  spanId: '00f067aa0ba902b7',
  sampled: true,
  requestId: '3f2a0b7e-1c1d-4b2a-9e1e-2f0c8d7a6b5c',
  clientAddress: '10.1.2.3',
  code: undefined,
  userAgent: 'curl/8.5.0',
  attempts: 1,
};

describe('createAccessLog', () => {
  it('writes each line with its own names when consecutive records differ in any of them', () => {
    const out = memoryStream();
    const access = createAccessLog(createLogger(cfg(), out.stream), true);
    // Each change alone, then back: a name left out of the comparison would repeat the last line's.
    const records = [
      RECORD,
      RECORD,
      { ...RECORD, method: 'POST' },
      RECORD,
      { ...RECORD, endpoint: 'http://10.0.0.9:8080' },
      RECORD,
      { ...RECORD, listener: 'internal' },
      RECORD,
      { ...RECORD, upstream: 'orders' },
      RECORD,
      { ...RECORD, route: 'orders' },
      { ...RECORD, route: undefined, upstream: undefined, endpoint: undefined },
      RECORD,
    ];
    for (const r of records) access.log(r);
    access.flush();
    const pick = (l: Record<string, unknown>) => [l.listener, l.route, l.upstream, l.endpoint, l.method];
    expect(out.lines().map(pick)).toEqual(records.map((r) => pick(r as unknown as Record<string, unknown>)));
  });

  it('writes one JSON line per request with the record fields', () => {
    const out = memoryStream();
    const access = createAccessLog(createLogger(cfg(), out.stream), true);
    access.log(RECORD);
    access.log({
      ...RECORD,
      route: undefined,
      upstream: undefined,
      endpoint: undefined,
      upstreamDurationMs: undefined,
      status: 404,
      code: 'ROUTE_NOT_FOUND',
      attempts: 0,
    });
    access.flush();
    const [ok, notFound] = out.lines();
    const { code: _code, traceId, spanId, sampled: _sampled, ...defined } = RECORD;
    expect(ok).toEqual({
      level: 'info',
      time: expect.any(Number),
      service: 'peregrine-test',
      type: 'access',
      msg: 'access',
      ...defined,
      // The OpenTelemetry log data model's names for the trace context.
      trace_id: traceId,
      span_id: spanId,
      trace_flags: '01',
    });
    expect(notFound).toMatchObject({
      type: 'access',
      msg: 'access',
      status: 404,
      code: 'ROUTE_NOT_FOUND',
      attempts: 0,
    });
    // Undefined fields are left out rather than written as null.
    expect(notFound).not.toHaveProperty('route');
    expect(notFound).not.toHaveProperty('upstreamDurationMs');
    expect(out.text().split('\n').filter(Boolean)).toHaveLength(2);
  });

  it('writes the trace context under the OpenTelemetry names, unsampled as 00, absent when there is none', () => {
    const out = memoryStream();
    const access = createAccessLog(createLogger(cfg(), out.stream), true);
    access.log({ ...RECORD, sampled: false });
    access.log({ ...RECORD, traceId: undefined, spanId: undefined, sampled: false });
    access.log({ ...RECORD, traceId: '', spanId: '', sampled: false });
    access.flush();
    const [unsampled, none, empty] = out.lines();
    expect(unsampled).toMatchObject({
      trace_id: RECORD.traceId,
      span_id: RECORD.spanId,
      trace_flags: '00',
    });
    for (const line of [none, empty]) {
      for (const key of ['trace_id', 'span_id', 'trace_flags', 'traceId', 'spanId'])
        expect(line).not.toHaveProperty(key);
    }
    expect(out.text()).not.toContain('traceId');
  });

  it('honours the configured level: access lines are info lines', () => {
    for (const [level, written] of [
      ['debug', true],
      ['info', true],
      ['warn', false],
    ] as const) {
      const out = memoryStream();
      const logger = createLogger(cfg({ logLevel: level }), out.stream);
      const access = createAccessLog(logger, true);
      expect(access.enabled, level).toBe(written);
      access.log(RECORD);
      access.flush();
      logger.warn('a warning');
      expect(
        out.lines().map((l) => `${l.level} ${l.msg}`),
        level,
      ).toEqual(written ? ['info access', 'warn a warning'] : ['warn a warning']);
    }
  });

  it('is a shared no-op when disabled', () => {
    const out = memoryStream();
    const a = createAccessLog(createLogger(cfg(), out.stream), false);
    const b = createAccessLog(createLogger(cfg(), out.stream), false);
    a.log(RECORD);
    expect(out.text()).toBe('');
    // Decided at construction: the same empty function, no per-request flag check.
    expect(a.log).toBe(b.log);
    expect(a.log.length).toBe(0);
  });

  it('logs only the record fields even when handed a wider object', () => {
    const out = memoryStream();
    const access = createAccessLog(createLogger(cfg(), out.stream), true);
    const wider = {
      ...RECORD,
      headers: { authorization: 'Bearer leak', cookie: 'sid=leak' },
      query: '?token=leak',
    };
    access.log(wider as AccessLogRecord);
    access.flush();
    expect(out.text()).not.toContain('leak');
    expect(Object.keys(out.lines()[0]!)).not.toContain('headers');
  });

  it('escapes names that need it, and stays right past the bound of its quoted-name cache', () => {
    const out = memoryStream();
    const access = createAccessLog(createLogger(cfg(), out.stream), true);
    access.log({ ...RECORD, route: 'say "hi"\\now', upstream: 'tab\there' });
    // More distinct methods than the cache keeps (HTTP/2 allows any token), then the first again.
    for (let i = 0; i < 600; i++) access.log({ ...RECORD, method: `M${i}` });
    access.log({ ...RECORD, method: 'M0' });
    access.flush();
    const lines = out.lines();
    expect(lines[0]).toMatchObject({ route: 'say "hi"\\now', upstream: 'tab\there' });
    expect(lines.slice(1).map((l) => l.method)).toEqual([
      ...Array.from({ length: 600 }, (_, i) => `M${i}`),
      'M0',
    ]);
  });

  it('writes any client-supplied string so that it parses back to itself', () => {
    const out = memoryStream();
    const access = createAccessLog(createLogger(cfg(), out.stream), true);
    const values = [
      '/plain/path-1.2_~:@!$&()*+,;=',
      '/with "quote"',
      '/back\\slash',
      '/ctl\u0001\u001f\u007f',
      '/new\nline\ttab',
      '/ünïcødé/☃/𝄞',
      '/lone\ud800surrogate',
      '',
      ' ',
      '\u2028\u2029',
    ];
    for (const v of values) access.log({ ...RECORD, path: v, userAgent: v, subject: v, clientIdentity: v });
    access.flush();
    const raw = out.text().split('\n').filter(Boolean);
    expect(raw).toHaveLength(values.length);
    raw.forEach((line, i) => {
      const v = values[i]!;
      const parsed = JSON.parse(line) as Record<string, unknown>;
      for (const key of ['path', 'userAgent', 'subject', 'clientIdentity']) expect(parsed[key]).toBe(v);
      // Nothing raw that JSON forbids: no control characters, and the line is one line.
      expect([...line].filter((c) => c.charCodeAt(0) < 0x20)).toEqual([]);
    });
  });

  it('makes room for the longest a line can be once escaped, past the size of a slab', () => {
    const out = memoryStream();
    const access = createAccessLog(createLogger(cfg(), out.stream), true);
    const path = `/${'\u0001"'.repeat(40_000)}`;
    const subject = '€😀'.repeat(10_000);
    access.log(RECORD);
    access.log({ ...RECORD, path, subject, clientIdentity: subject, code: 'X"\n' });
    access.log(RECORD);
    access.flush();
    const lines = out
      .text()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => l.path)).toEqual([RECORD.path, path, RECORD.path]);
    expect(lines[1]).toMatchObject({ subject, clientIdentity: subject, code: 'X"\n' });
  });

  it('cuts very long user agents', () => {
    const out = memoryStream();
    const access = createAccessLog(createLogger(cfg(), out.stream), true);
    access.log({ ...RECORD, userAgent: 'x'.repeat(5000) });
    access.flush();
    expect((out.lines()[0]!.userAgent as string).length).toBe(512);
  });

  it('does not let an auth header through the logger shared with other log lines', () => {
    const out = memoryStream();
    const logger = createLogger(cfg(), out.stream);
    const access = createAccessLog(logger, true);
    logger.warn(
      { req: { method: 'GET', headers: { authorization: 'Bearer leak', cookie: 'sid=leak' } } },
      'rejected',
    );
    access.log(RECORD);
    access.flush();
    expect(out.text()).not.toContain('leak');
    expect(out.lines()[0]).toMatchObject({
      req: { headers: { authorization: '[REDACTED]', cookie: '[REDACTED]' } },
    });
  });
});

/** Resolves after the current event-loop turn's immediates have run. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

describe('access-log batching', () => {
  it('hands the lines of up to 25 ms to the destination as one write, in order', () => {
    vi.useFakeTimers();
    try {
      const out = memoryStream();
      const writes: string[] = [];
      const { stream } = out;
      const write = stream.write.bind(stream);
      stream.write = ((chunk: string, ...rest: never[]) => {
        writes.push(String(chunk));
        return write(chunk, ...rest);
      }) as typeof stream.write;
      const access = createAccessLog(createLogger(cfg(), stream), true);
      for (let i = 0; i < 5; i++) {
        access.log({ ...RECORD, requestId: `r${i}` });
        vi.advanceTimersByTime(FLUSH_DELAY_MS / 5 - 1);
      }
      expect(writes).toHaveLength(0);
      vi.advanceTimersByTime(5);
      expect(writes).toHaveLength(1);
      expect(out.lines().map((l) => l.requestId)).toEqual(['r0', 'r1', 'r2', 'r3', 'r4']);
      // A later line starts a new batch; time with nothing logged writes nothing.
      access.log({ ...RECORD, requestId: 'r5' });
      vi.advanceTimersByTime(FLUSH_DELAY_MS * 4);
      expect(writes).toHaveLength(2);
      expect(out.lines().map((l) => l.requestId)).toHaveLength(6);
    } finally {
      vi.useRealTimers();
    }
  });

  it('writes a full batch at once, without waiting for the delay', () => {
    const out = memoryStream();
    const access = createAccessLog(createLogger(cfg(), out.stream), true);
    let n = 0;
    while (out.text() === '') access.log({ ...RECORD, requestId: `r${n++}` });
    // Lines are about 400 bytes: the batch filled at 64 KiB, well before a thousand lines.
    expect(n).toBeGreaterThan(100);
    expect(n).toBeLessThan(300);
    expect(out.lines().map((l) => l.requestId)).toEqual(Array.from({ length: n }, (_, i) => `r${i}`));
  });

  it('keeps every line, in order, through the asynchronous default destination up to shutdown', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'peregrine-access-'));
    const fd = openSync(join(dir, 'access.log'), 'w');
    try {
      const destination = new LogDestination(fd);
      const telemetry = createTelemetry(cfg({ accessLog: { enabled: true } }), {
        version: 'test',
        logDestination: destination,
      });
      // Several turns' worth, with the destination busy writing earlier batches meanwhile.
      let id = 0;
      for (let turn = 0; turn < 20; turn++) {
        for (let i = 0; i < 100; i++) telemetry.accessLog.log({ ...RECORD, requestId: `r${id++}` });
        await nextTurn();
      }
      // The destination idle, then lines logged in the very turn that shuts down.
      expect(await destination.drain(5000)).toBe(true);
      for (let i = 0; i < 100; i++) telemetry.accessLog.log({ ...RECORD, requestId: `r${id++}` });
      await telemetry.shutdown();
      const ids = readFileSync(join(dir, 'access.log'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => (JSON.parse(l) as { requestId: string }).requestId);
      expect(ids).toEqual(Array.from({ length: id }, (_, i) => `r${i}`));
    } finally {
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('accessRecord', () => {
  it('copies the exchange and rounds durations to the microsecond', () => {
    const rec = accessRecord(
      'edge',
      'users',
      'users-svc',
      'http://10.0.0.5:8080',
      'GET',
      200,
      1.2344,
      'curl/8.5.0',
      {
        path: '/users/42',
        requestId: RECORD.requestId,
        clientAddress: '10.1.2.3',
        code: undefined,
        attempts: 1,
        identity: undefined,
        traceId: RECORD.traceId,
        spanId: RECORD.spanId,
        sampled: true,
        requestBytes: 0,
        responseBytes: 512,
        upstreamDurationMs: 0.9000004,
        subject: undefined,
      },
    );
    expect(rec).toEqual({ ...RECORD, clientIdentity: undefined, subject: undefined });
  });

  it('fills what a local exchange leaves out with the empty values', () => {
    const rec = accessRecord('edge', undefined, undefined, undefined, '-', 400, 0, undefined, {
      path: '',
      requestId: '',
      clientAddress: '10.1.2.3',
      code: 'BAD_REQUEST',
      attempts: 0,
      identity: undefined,
    });
    expect(rec).toMatchObject({ path: '-', sampled: false, requestBytes: 0, responseBytes: 0 });
    expect(rec.traceId).toBeUndefined();
    expect(rec.spanId).toBeUndefined();
    expect(rec.upstreamDurationMs).toBeUndefined();
  });
});
