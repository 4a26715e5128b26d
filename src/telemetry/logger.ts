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

export function createLogger(cfg: TelemetryConfig, destination?: DestinationStream): Logger {
  return pino(
    {
      level: cfg.logLevel,
      base: { service: cfg.serviceName },
      formatters: { level: (label) => ({ level: label }) },
      hooks: { streamWrite: redactSecrets },
    },
    destination ?? new LogDestination(),
  );
}

/** The parts of a SonicBoom (pino.destination) that flushing needs. */
interface SonicBoomLike {
  flushSync(): void;
  once(event: 'write' | 'error', listener: () => void): unknown;
  removeListener(event: 'write' | 'error', listener: () => void): unknown;
  /** Internal: an asynchronous fs.write is in flight. */
  _writing?: boolean;
}

function isSonicBoom(stream: unknown): stream is SonicBoomLike {
  return typeof (stream as SonicBoomLike | undefined)?.flushSync === 'function';
}

/** How long flushLogger waits for an in-flight asynchronous write before writing the rest anyway. */
const FLUSH_WAIT_MS = 1000;

/**
 * Write out everything the destination still holds; call before process.exit(). For the default
 * asynchronous stdout destination, `logger.flush()` returns at once (SonicBoom with minLength 0)
 * and `flushSync()` skips a write that is in flight (which process.exit would then lose), so this
 * waits for that write to land and then writes the queue synchronously. Never rejects.
 */
/** The destination a pino logger writes to (pino keeps it under a symbol). */
export function destinationOf(logger: Logger): unknown {
  return (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym];
}

export async function flushLogger(logger: Logger): Promise<void> {
  let stream = destinationOf(logger);
  if (stream instanceof LogDestination) {
    stream.lines.flush();
    stream = stream.boom;
  }
  if (!isSonicBoom(stream)) {
    await new Promise<void>((resolve) => {
      try {
        logger.flush(() => resolve());
      } catch {
        resolve();
      }
    });
    return;
  }
  const boom = stream;
  const deadline = Date.now() + FLUSH_WAIT_MS;
  while (boom._writing === true && Date.now() < deadline) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(settle, deadline - Date.now());
      function settle(): void {
        clearTimeout(timer);
        boom.removeListener('write', settle);
        boom.removeListener('error', settle);
        resolve();
      }
      boom.once('write', settle);
      boom.once('error', settle);
    });
  }
  try {
    boom.flushSync();
  } catch {
    // Not open yet, or already destroyed: nothing more can be written.
  }
}
