/**
 * The process logger: pino, one JSON object per line, `service` on every line, and credential
 * headers censored wherever they appear.
 *
 * Censoring happens on the finished line (pino's `streamWrite` hook), not with pino's `redact`
 * paths. pino 10's redaction has no recursive wildcard, and its leading-wildcard paths
 * (`*.headers.authorization`) run for every top-level field of every line: measured at about
 * 100 µs for one access-log line with the path set needed to reach depth 3, and 5-25 µs for small
 * diagnostic lines. The hook costs about 0.5 µs per line, and it catches any depth and any letter
 * case, in child bindings and error objects alike.
 */
import pino, { type DestinationStream, type Logger } from 'pino';
import type { TelemetryConfig } from '../config/schema.ts';
import { LogDestination } from './log-destination.ts';

/** Header names whose values never reach a log line. */
export const SECRET_HEADERS: readonly string[] = [
  'authorization',
  'proxy-authorization',
  'cookie',
  'set-cookie',
];

export const REDACTED = '[REDACTED]';

/**
 * `"<secret header>":` followed by a JSON string, an array of strings or a flat object, in any
 * letter case. Keys are matched with their JSON quotes, so text that merely mentions a header
 * inside a string value (where the quotes are escaped) is left alone.
 */
const SECRET_FIELD = new RegExp(
  `"(${SECRET_HEADERS.join('|')})":(?:"(?:[^"\\\\]|\\\\.)*"|\\[(?:"(?:[^"\\\\]|\\\\.)*",?)*\\]|\\{[^{}]*\\})`,
  'gi',
);

/** Replace the value of every secret header field in one serialised JSON line. */
export function redactSecrets(line: string): string {
  return line.replace(SECRET_FIELD, `"$1":"${REDACTED}"`);
}

/** The level of access lines: they are written when the configured level lets `info` through. */
export const ACCESS_LEVEL = 'info';

/**
 * The destination of every logger createLogger made, so the access log can write to it and
 * flushLogger can flush it without reading pino's internal symbols.
 */
const destinations = new WeakMap<Logger, DestinationStream | LogDestination>();

export function createLogger(cfg: TelemetryConfig, destination?: DestinationStream): Logger {
  const dest = destination ?? new LogDestination();
  const logger = pino(
    {
      level: cfg.logLevel,
      base: { service: cfg.serviceName },
      formatters: { level: (label) => ({ level: label }) },
      hooks: { streamWrite: redactSecrets },
    },
    dest,
  );
  destinations.set(logger, dest);
  return logger;
}

/** The destination createLogger gave `logger`; it throws for a logger createLogger did not make. */
export function destinationOf(logger: Logger): DestinationStream | LogDestination {
  const dest = destinations.get(logger);
  if (dest === undefined) throw new Error('not a logger made by createLogger()');
  return dest;
}

/** How long flushLogger waits for asynchronous writes before writing the rest synchronously. */
const FLUSH_WAIT_MS = 1000;

/**
 * Write out everything the destination still holds; call before process.exit(). The default
 * destination writes asynchronously: this waits (up to FLUSH_WAIT_MS) for what it handed over to
 * be written, and only if that did not happen writes what is left synchronously (a synchronous
 * write while an asynchronous one is in flight could put lines out of order, so it is the last
 * resort). Other destinations get pino's `logger.flush()`. Never rejects.
 */
export async function flushLogger(logger: Logger): Promise<void> {
  const dest = destinations.get(logger);
  if (dest instanceof LogDestination) {
    if (await dest.drain(FLUSH_WAIT_MS)) return;
    try {
      dest.boom.flushSync();
    } catch {
      // Not open yet, or already destroyed: nothing more can be written.
    }
    return;
  }
  await new Promise<void>((resolve) => {
    try {
      logger.flush(() => resolve());
    } catch {
      resolve();
    }
  });
}
