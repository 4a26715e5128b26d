import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { TelemetrySchema } from '../../../src/config/schema.ts';
import { createAccessLog, millisText } from '../../../src/telemetry/access-log.ts';
import {
  FLUSH_DELAY_MS,
  LineBatch,
  LogDestination,
  MAX_BATCH_BYTES,
} from '../../../src/telemetry/log-destination.ts';
import { createLogger, flushLogger } from '../../../src/telemetry/logger.ts';

describe('LineBatch', () => {
  it('hands the lines of up to FLUSH_DELAY_MS over as one chunk, in order, and nothing when idle', () => {
    vi.useFakeTimers();
    try {
      const chunks: string[] = [];
      const batch = new LineBatch((chunk) => chunks.push(chunk.toString()));
      batch.add('a\n');
      vi.advanceTimersByTime(FLUSH_DELAY_MS - 1);
      batch.add('b\n');
      expect(chunks).toEqual([]);
      vi.advanceTimersByTime(1);
      expect(chunks).toEqual(['a\nb\n']);
      vi.advanceTimersByTime(FLUSH_DELAY_MS * 4);
      batch.flush();
      expect(chunks).toHaveLength(1);
      // flush() hands over at once and cancels the pending timer.
      batch.add('c\n');
      batch.flush();
      expect(chunks).toEqual(['a\nb\n', 'c\n']);
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });

  it('hands a batch over as soon as it is full', () => {
    const chunks: Buffer[] = [];
    const batch = new LineBatch((chunk) => chunks.push(chunk));
    const line = `${'x'.repeat(99)}\n`;
    let n = 0;
    while (chunks.length === 0) {
      batch.add(line);
      n++;
    }
    expect(n).toBe(Math.ceil(MAX_BATCH_BYTES / line.length));
    expect(chunks[0]!.length).toBe(n * line.length);
  });

  it('encodes any string as UTF-8, a line longer than a slab included', () => {
    const chunks: Buffer[] = [];
    const batch = new LineBatch((chunk) => chunks.push(chunk));
    const lines = ['/ünïcødé/☃/𝄞\n', `${'é'.repeat(100_000)}\n`, '/lone\ud800surrogate\n', 'ascii\n'];
    for (const l of lines) batch.add(l);
    batch.flush();
    expect(Buffer.concat(chunks).toString()).toBe(lines.join('').replace('\ud800', '\ufffd'));
  });

  it('never writes over a chunk it handed over, across slabs', () => {
    // The receiver keeps every chunk (as a slow asynchronous write would) while many more lines
    // are queued: each chunk must still read as it did when it was handed over.
    const kept: { chunk: Buffer; text: string }[] = [];
    const batch = new LineBatch((chunk) => kept.push({ chunk, text: chunk.toString() }));
    for (let i = 0; i < 20_000; i++) {
      batch.add(`line ${i} ${'ü'.repeat(i % 50)}\n`);
      if (i % 7 === 0) batch.flush();
    }
    batch.flush();
    expect(kept.length).toBeGreaterThan(2000);
    for (const k of kept) expect(k.chunk.toString()).toBe(k.text);
    const all = kept.map((k) => k.text).join('');
    expect(all.split('\n').filter(Boolean)).toHaveLength(20_000);
  });
});

describe('LogDestination', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  function tempFile(): { file: string; fd: number } {
    const dir = mkdtempSync(join(tmpdir(), 'peregrine-logdest-'));
    dirs.push(dir);
    const file = join(dir, 'out.log');
    return { file, fd: openSync(file, 'w') };
  }

  it("writes pino's lines after the access lines queued before them, and flushLogger writes all", async () => {
    const { file, fd } = tempFile();
    const destination = new LogDestination(fd);
    const logger = createLogger(TelemetrySchema.parse({ serviceName: 'order-test' }), destination);
    const access = createAccessLog(logger, true);
    const record = {
      listener: 'edge',
      route: 'r',
      upstream: 'u',
      endpoint: 'http://127.0.0.1:1',
      method: 'GET',
      path: '/ß',
      status: 200,
      durationMs: 1.5,
      upstreamDurationMs: 1,
      requestBytes: 0,
      responseBytes: 2,
      traceId: undefined,
      spanId: undefined,
      sampled: false,
      requestId: 'r1',
      clientAddress: '127.0.0.1',
      code: undefined,
      userAgent: 'ü',
      attempts: 1,
    };
    access.log(record);
    access.log({ ...record, requestId: 'r2' });
    logger.warn({ headers: { authorization: 'Bearer leak' } }, 'diagnostic ☃');
    access.log({ ...record, requestId: 'r3' });
    await flushLogger(logger);
    closeSync(fd);
    const lines = readFileSync(file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => l.requestId ?? l.msg)).toEqual(['r1', 'r2', 'diagnostic ☃', 'r3']);
    expect(lines[0]).toMatchObject({ path: '/ß', userAgent: 'ü', durationMs: 1.5, service: 'order-test' });
    expect(JSON.stringify(lines)).not.toContain('leak');
  });
});

describe('millisText', () => {
  it('writes milliseconds to the microsecond, as JSON that reads back as the rounded value', () => {
    expect(millisText(0)).toBe('0.000');
    expect(millisText(1.2344)).toBe('1.234');
    expect(millisText(1.23)).toBe('1.230');
    expect(millisText(0.0005)).toBe('0.001');
    expect(millisText(0.05)).toBe('0.050');
    expect(millisText(12_345.6789)).toBe('12345.679');
    for (let i = 0; i < 10_000; i++) {
      const ms = Math.random() * 10 ** (i % 7);
      expect(JSON.parse(millisText(ms))).toBe(Math.round(ms * 1000) / 1000);
    }
    // Outside the integer fast path it is still a number that reads back.
    expect(JSON.parse(millisText(2e9))).toBe(2e9);
  });
});
