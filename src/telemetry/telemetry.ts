import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { DestinationStream, Logger } from 'pino';
import type { TelemetryConfig } from '../config/schema.ts';
import { type AccessLog, createAccessLog } from './access-log.ts';
import { createLogger, flushLogger } from './logger.ts';
import { createMetrics, type GatewayMetrics } from './metrics.ts';
import { RECENT_DECISIONS, RecentDecisions } from './recent-decisions.ts';
import { createTracing, type Tracing } from './tracing.ts';

/** The telemetry layer the data plane writes to at its fixed points. */
export interface Telemetry {
  readonly metrics: GatewayMetrics;
  readonly tracing: Tracing;
  readonly logger: Logger;
  readonly accessLog: AccessLog;
  /** The last responses the gateway made itself, for the admin API. */
  readonly decisions: RecentDecisions;
  /** Flush spans and logs. Safe to call twice. */
  shutdown(): Promise<void>;
}

export function createTelemetry(
  cfg: TelemetryConfig,
  opts: {
    version: string;
    logDestination?: DestinationStream | undefined;
    spanProcessor?: SpanProcessor | undefined;
    /** How many local decisions `decisions` keeps (`admin.recentDecisions`). */
    recentDecisions?: number | undefined;
  },
): Telemetry {
  const logger = createLogger(cfg, opts.logDestination);
  const metrics = createMetrics({
    exemplars: cfg.metrics.exemplars,
    latencyBuckets: cfg.metrics.latencyBuckets,
    routeHistograms: cfg.metrics.routeHistograms,
    eventLoopResolutionMs: cfg.metrics.eventLoopResolution,
    version: opts.version,
  });
  const tracing = createTracing(cfg, {
    spanProcessorForTests: opts.spanProcessor,
    report: { metrics, logger },
    version: opts.version,
  });
  const accessLog = createAccessLog(logger, cfg.accessLog.enabled);
  const decisions = new RecentDecisions(opts.recentDecisions ?? RECENT_DECISIONS);
  let closing: Promise<void> | undefined;
  return {
    metrics,
    tracing,
    logger,
    accessLog,
    decisions,
    shutdown() {
      closing ??= (async () => {
        accessLog.flush();
        metrics.close();
        await tracing.shutdown();
        await flushLogger(logger);
      })();
      return closing;
    },
  };
}
