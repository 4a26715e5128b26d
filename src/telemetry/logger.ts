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

/** Header names whose values never reach a log line. */
export const SECRET_HEADERS: readonly string[] = ['authorization', 'proxy-authorization', 'cookie', 'set-cookie'];

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

export function createLogger(cfg: TelemetryConfig, destination?: DestinationStream): Logger {
  return pino(
    {
      level: cfg.logLevel,
      base: { service: cfg.serviceName },
      formatters: { level: (label) => ({ level: label }) },
      hooks: { streamWrite: redactSecrets },
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

/** Write out what the destination still buffers (async stdout). Resolves even if flushing fails. */
export function flushLogger(logger: Logger): Promise<void> {
  return new Promise((resolve) => {
    try {
      logger.flush(() => resolve());
    } catch {
      resolve();
    }
  });
}
