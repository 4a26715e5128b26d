import { closeSync, mkdtempSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { type TelemetryConfig, TelemetrySchema } from '../../../src/config/schema.ts';
import { LogDestination } from '../../../src/telemetry/log-destination.ts';
import { createLogger, flushLogger, REDACTED, redactSecrets } from '../../../src/telemetry/logger.ts';
import { memoryStream } from './memory-stream.ts';

function cfg(input: Record<string, unknown> = {}): TelemetryConfig {
  return TelemetrySchema.parse({ serviceName: 'peregrine-test', ...input });
}

const SECRETS = ['Bearer s3cr3t-token', 'session=abc123', 'sid=xyz; HttpOnly', 'Basic cHJveHk6cHc='];

describe('createLogger', () => {
  it('writes JSON lines with level label, service and message', () => {
    const out = memoryStream();
    const log = createLogger(cfg(), out.stream);
    log.info({ upstream: 'users' }, 'hello');
    log.debug('not at info');
    expect(out.lines()).toEqual([
      expect.objectContaining({ level: 'info', service: 'peregrine-test', upstream: 'users', msg: 'hello' }),
    ]);
    expect(typeof out.lines()[0]!.time).toBe('number');
  });

  it('takes the level from the config', () => {
    const out = memoryStream();
    const log = createLogger(cfg({ logLevel: 'debug' }), out.stream);
    log.debug('visible');
    log.trace('hidden');
    expect(out.lines().map((l) => l.msg)).toEqual(['visible']);
  });

  it('never writes Authorization, Proxy-Authorization, Cookie or Set-Cookie values', () => {
    const out = memoryStream();
    const log = createLogger(cfg(), out.stream);
    const [bearer, cookie, setCookie, basic] = SECRETS;
    log.info(
      { headers: { authorization: bearer, cookie, 'set-cookie': [setCookie, 'b="2"'], accept: '*/*' } },
      'bag',
    );
    log.info({ req: { headers: { Authorization: bearer, Cookie: cookie } } }, 'nested, any case');
    log.warn(
      { err: { response: { headers: { 'Set-Cookie': setCookie, 'proxy-authorization': basic } } } },
      'deep',
    );
    log.info({ a: { b: { c: { d: { headers: { AUTHORIZATION: bearer } } } } } }, 'deeper still');
    log.info({ authorization: bearer, cookie: { sid: 'abc123' } }, 'bare keys');
    log.child({ headers: { authorization: bearer } }).info('in child bindings');
    log.error(
      Object.assign(new Error('upstream said no'), { headers: { authorization: bearer } }),
      'error object',
    );

    const text = out.text();
    for (const secret of SECRETS) expect(text).not.toContain(secret.split(' ').pop());
    expect(text).not.toContain('abc123');
    const lines = out.lines();
    expect(lines).toHaveLength(7);
    expect(lines[0]).toMatchObject({
      headers: { authorization: REDACTED, 'set-cookie': REDACTED, accept: '*/*' },
    });
    expect(lines[1]).toMatchObject({ req: { headers: { Authorization: REDACTED, Cookie: REDACTED } } });
    expect(lines[6]).toMatchObject({ msg: 'error object', err: { message: 'upstream said no' } });
  });

  it('leaves values that only mention a header name alone', () => {
    const line = JSON.stringify({
      msg: 'the "authorization":"x" header was missing',
      authorization_mode: 'none',
    });
    expect(redactSecrets(line)).toBe(line);
  });

  it('flushLogger writes out the default asynchronous destination, in order', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'peregrine-log-')), 'out.log');
    const fd = openSync(file, 'w');
    const log = createLogger(cfg(), new LogDestination(fd));
    for (let i = 0; i < 2000; i++) log.info({ i, pad: 'x'.repeat(200) }, 'line');
    await flushLogger(log);
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    expect(lines.map((l) => (JSON.parse(l) as { i: number }).i)).toEqual([...Array(2000).keys()]);
    closeSync(fd);
  });

  it("flushLogger uses pino's own flush for other destinations", async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'peregrine-log-')), 'out.log');
    const dest = pino.destination({ dest: file, sync: true });
    const log = createLogger(cfg(), dest);
    for (let i = 0; i < 100; i++) log.info({ i }, 'line');
    await flushLogger(log);
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(100);
    dest.end();
  });

  it('flushLogger resolves for plain streams too', async () => {
    const out = memoryStream();
    await expect(flushLogger(createLogger(cfg(), out.stream))).resolves.toBeUndefined();
  });
});
