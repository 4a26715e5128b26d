/**
 * Cost of one access-log line, and of censoring credential headers: pino's `redact` with the
 * leading-wildcard paths needed to reach header bags at any depth, against the streamWrite hook
 * logger.ts uses. Output goes to a destination that only counts bytes; at the end, the access log
 * with its real asynchronous destination (to /dev/null).
 *
 *   node bench/micro/logging.ts
 */
import { openSync } from 'node:fs';
import pino, { type DestinationStream } from 'pino';
import { TelemetrySchema } from '../../src/config/schema.ts';
import { type AccessLogRecord, createAccessLog } from '../../src/telemetry/access-log.ts';
import { LogDestination } from '../../src/telemetry/log-destination.ts';
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
  sampled: true,
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
const off = createAccessLog(logger, false);
bench('disabled', () => off.log(RECORD), 1_000_000);

header('one diagnostic line with an error object');
bench('createLogger(...)  [streamWrite censoring]', () => logger.warn(DIAGNOSTIC, 'upstream failed'), 50_000);
bench('pino redact, wildcard paths', () => wildcard.warn(DIAGNOSTIC, 'upstream failed'), 5_000);
bench('no censoring', () => plain.warn(DIAGNOSTIC, 'upstream failed'), 50_000);
if (bytes === 0) throw new Error('nothing was written');

// The access log with its real destination: lines logged in event-loop turns of 16 (about what a
// loaded gateway finishes per turn), written asynchronously by the default destination to
// /dev/null; ns per line, the turns themselves subtracted.
header('access log into the default destination');
const PER_TURN = 16;
const TURNS = 4000;
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

async function run(log: ((r: AccessLogRecord) => void) | undefined): Promise<number> {
  const start = process.hrtime.bigint();
  for (let t = 0; t < TURNS; t++) {
    if (log) for (let i = 0; i < PER_TURN; i++) log(RECORD);
    await turn();
  }
  return Number(process.hrtime.bigint() - start);
}

const toNull = createAccessLog(createLogger(cfg, new LogDestination(openSync('/dev/null', 'w'))), true);
const samples: number[] = [];
for (let round = 0; round < 12; round++) {
  const empty = await run(undefined);
  const full = await run(toNull.log);
  samples.push((full - empty) / (TURNS * PER_TURN));
}
samples.sort((a, b) => a - b);
console.log(
  `access line into the default destination (/dev/null), 16 per event-loop turn: ${samples[0]!.toFixed(0)} ns/line (median ${samples[6]!.toFixed(0)})`,
);
