/**
 * Cost of one access-log line, and of censoring credential headers: pino's `redact` with the
 * leading-wildcard paths needed to reach header bags at any depth, against the streamWrite hook
 * logger.ts uses. Output goes to a destination that only counts bytes.
 *
 *   node bench/micro/logging.ts
 */
import pino, { type DestinationStream } from 'pino';
import { TelemetrySchema } from '../../src/config/schema.ts';
import { type AccessLogRecord, createAccessLog } from '../../src/telemetry/access-log.ts';
import { createLogger, SECRET_HEADERS } from '../../src/telemetry/logger.ts';
import { bench, header } from './harness.ts';

let bytes = 0;
const sink: DestinationStream = {
  write(line: string) {
    bytes += line.length;
  },
};

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
  requestId: '3f2a0b7e-1c1d-4b2a-9e1e-2f0c8d7a6b5c',
  clientAddress: '10.1.2.3',
  code: undefined,
  userAgent: 'curl/8.5.0',
  attempts: 1,
};
const DIAGNOSTIC = { upstream: 'users-svc', err: { message: 'connect ECONNREFUSED', code: 'ECONNREFUSED' } };

const cfg = TelemetrySchema.parse({});
const logger = createLogger(cfg, sink);
const wildcardPaths = SECRET_HEADERS.flatMap((h) => {
  const key = `["${h}"]`;
  return [key, `*${key}`, `headers${key}`, `*.headers${key}`, `*.*.headers${key}`, `*.*.*.headers${key}`];
});
const wildcard = pino(
  {
    base: { service: cfg.serviceName },
    formatters: { level: (label) => ({ level: label }) },
    redact: { paths: wildcardPaths, censor: '[REDACTED]' },
  },
  sink,
);
const plain = pino(
  { base: { service: cfg.serviceName }, formatters: { level: (label) => ({ level: label }) } },
  sink,
);

header('one access-log line (18 fields)');
const access = createAccessLog(logger, true);
bench('createAccessLog(...).log(record)  [streamWrite censoring]', () => access.log(RECORD), 50_000);
const wildcardAccess = createAccessLog(wildcard, true);
bench(
  `same, logger with pino redact (${wildcardPaths.length} wildcard paths)`,
  () => wildcardAccess.log(RECORD),
  5_000,
);
const plainAccess = createAccessLog(plain, true);
bench('same, no censoring at all', () => plainAccess.log(RECORD), 50_000);
const off = createAccessLog(logger, false);
bench('disabled', () => off.log(RECORD), 1_000_000);

header('one diagnostic line with an error object');
bench('createLogger(...)  [streamWrite censoring]', () => logger.warn(DIAGNOSTIC, 'upstream failed'), 50_000);
bench('pino redact, wildcard paths', () => wildcard.warn(DIAGNOSTIC, 'upstream failed'), 5_000);
bench('no censoring', () => plain.warn(DIAGNOSTIC, 'upstream failed'), 50_000);
if (bytes === 0) throw new Error('nothing was written');
