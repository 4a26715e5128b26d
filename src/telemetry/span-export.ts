/**
 * Span export that reports on itself: spans exported, failed and dropped, export latency, the
 * batch queue's depth, and a log line (at most one a minute) while export fails. Without this, an
 * unreachable collector is silent: the SDK reports export failures only to its diagnostic logger,
 * which is off.
 *
 * Exported and failed spans and the latency come from wrapping the exporter (SpanExporter is the
 * SDK's stable interface). Drops and queue depth happen inside the BatchSpanProcessor, which tells
 * only its self-observability meter (`selfObsMeterProvider`, marked experimental): spanQueueMeter
 * below reads the two instruments it needs from it, `otel.sdk.processor.span.processed` with
 * `error.type` `queue_full` and `otel.sdk.processor.span.queue.size`.
 * tests/unit/telemetry/span-export.test.ts fills a real queue and fails loudly if an SDK upgrade
 * changes either.
 */
import { performance } from 'node:perf_hooks';
import {
  type Attributes,
  type Counter,
  createNoopMeter,
  type Meter,
  type MeterProvider,
  type ObservableCallback,
  type ObservableUpDownCounter,
} from '@opentelemetry/api';
import type { ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import type { Logger } from 'pino';
import type { GatewayMetrics } from './metrics.ts';

/** ExportResultCode.SUCCESS, without loading @opentelemetry/core's enum for one number. */
const EXPORT_SUCCESS = 0;

/** At most one line per this long about failing exports (and one about dropped spans). */
export const EXPORT_LOG_INTERVAL_MS = 60_000;

/** Where export outcomes are reported. */
export interface SpanExportReport {
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  /** ms; Date.now by default (tests). */
  readonly now?: () => number;
}

/**
 * One warning for the first failure, then at most one per EXPORT_LOG_INTERVAL_MS with what failed
 * in between, and one line when export works again.
 */
class ExportLog {
  readonly #logger: Logger;
  readonly #now: () => number;
  #lastFailureLine = Number.NEGATIVE_INFINITY;
  #failedBatches = 0;
  #failedSpans = 0;
  #failing = false;
  #lastDropLine = Number.NEGATIVE_INFINITY;
  #dropped = 0;

  constructor(logger: Logger, now: () => number) {
    this.#logger = logger;
    this.#now = now;
  }

  failed(spans: number, error: Error | undefined): void {
    this.#failing = true;
    this.#failedBatches++;
    this.#failedSpans += spans;
    const now = this.#now();
    if (now - this.#lastFailureLine < EXPORT_LOG_INTERVAL_MS) return;
    this.#lastFailureLine = now;
    this.#logger.warn(
      {
        batches: this.#failedBatches,
        spans: this.#failedSpans,
        err: { message: error?.message ?? 'unknown error', code: errorCode(error) },
      },
      'span export failed: spans are lost until the collector is reachable',
    );
    this.#failedBatches = 0;
    this.#failedSpans = 0;
  }

  succeeded(): void {
    if (!this.#failing) return;
    this.#failing = false;
    this.#logger.info(
      { unreportedBatches: this.#failedBatches, unreportedSpans: this.#failedSpans },
      'span export works again',
    );
    this.#failedBatches = 0;
    this.#failedSpans = 0;
    this.#lastFailureLine = Number.NEGATIVE_INFINITY;
  }

  dropped(spans: number): void {
    this.#dropped += spans;
    const now = this.#now();
    if (now - this.#lastDropLine < EXPORT_LOG_INTERVAL_MS) return;
    this.#lastDropLine = now;
    this.#logger.warn(
      { spans: this.#dropped },
      'spans dropped: the export queue is full (export too slow or failing; OTEL_BSP_MAX_QUEUE_SIZE)',
    );
    this.#dropped = 0;
  }
}

function errorCode(error: Error | undefined): string | number | undefined {
  const e = error as { code?: unknown } | undefined;
  return typeof e?.code === 'string' || typeof e?.code === 'number' ? e.code : undefined;
}

/**
 * The most spans handed to the exporter at once. The exporter serialises what it is handed in one
 * synchronous call, about 38k instructions a span: 512 spans (the processor's default batch) held
 * one event-loop turn for 2-7 ms while requests waited, 128 spans hold it for about a quarter of
 * that (docs/decisions.md, "Span export in slices").
 */
export const EXPORT_SLICE_SPANS = 128;

/**
 * A SpanExporter that counts and times every export of the exporter it wraps, and hands it a
 * batch larger than EXPORT_SLICE_SPANS in slices, one per event-loop turn (each its own request
 * to the collector, sent without waiting for the previous one); the batch's callback runs once,
 * when every slice has its result: failed if any slice failed. Each slice is counted and timed
 * as an export of its own.
 */
class ObservedSpanExporter implements SpanExporter {
  readonly #inner: SpanExporter;
  readonly #metrics: GatewayMetrics;
  readonly #log: ExportLog;

  constructor(inner: SpanExporter, log: ExportLog, metrics: GatewayMetrics) {
    this.#inner = inner;
    this.#log = log;
    this.#metrics = metrics;
  }

  export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    if (spans.length <= EXPORT_SLICE_SPANS) {
      this.#send(spans, resultCallback);
      return;
    }
    let pending = Math.ceil(spans.length / EXPORT_SLICE_SPANS);
    let failure: ExportResult | undefined;
    const sliceDone = (result: ExportResult): void => {
      if (result.code !== EXPORT_SUCCESS) failure ??= result;
      if (--pending === 0) resultCallback(failure ?? result);
    };
    const sendFrom = (from: number): void => {
      const to = from + EXPORT_SLICE_SPANS;
      if (to < spans.length) setImmediate(sendFrom, to);
      this.#send(spans.slice(from, to), sliceDone);
    };
    sendFrom(0);
  }

  #send(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    const started = performance.now();
    const count = spans.length;
    this.#inner.export(spans, (result) => {
      const seconds = (performance.now() - started) / 1000;
      if (result.code === EXPORT_SUCCESS) {
        this.#metrics.recordSpanExport('exported', count, seconds);
        this.#log.succeeded();
      } else {
        this.#metrics.recordSpanExport('failed', count, seconds);
        this.#log.failed(count, result.error);
      }
      resultCallback(result);
    });
  }

  shutdown(): Promise<void> {
    return this.#inner.shutdown();
  }

  forceFlush(): Promise<void> {
    return this.#inner.forceFlush?.() ?? Promise.resolve();
  }
}

const PROCESSED_SPANS = 'otel.sdk.processor.span.processed';
const QUEUE_SIZE = 'otel.sdk.processor.span.queue.size';
const QUEUE_FULL = 'queue_full';

/**
 * The BatchSpanProcessor's self-observability meter, reduced to what the gateway reports: spans
 * dropped because the queue was full, and the queue's depth at scrape time. Every other
 * instrument is a no-op.
 */
class SpanQueueMeter implements Meter {
  readonly #noop = createNoopMeter();
  readonly #onDropped: (spans: number) => void;
  readonly #onQueue: (read: (() => number) | undefined) => void;

  constructor(onDropped: (spans: number) => void, onQueue: (read: (() => number) | undefined) => void) {
    this.#onDropped = onDropped;
    this.#onQueue = onQueue;
  }

  createCounter(name: string): Counter {
    if (name !== PROCESSED_SPANS) return this.#noop.createCounter(name);
    const onDropped = this.#onDropped;
    return {
      add(value: number, attributes?: Attributes): void {
        if (attributes?.['error.type'] === QUEUE_FULL) onDropped(value);
      },
    };
  }

  createObservableUpDownCounter(name: string): ObservableUpDownCounter {
    if (name !== QUEUE_SIZE) return this.#noop.createObservableUpDownCounter(name);
    const onQueue = this.#onQueue;
    return {
      addCallback(callback: ObservableCallback): void {
        onQueue(() => {
          let value = 0;
          callback({ observe: (v: number) => (value = v) });
          return value;
        });
      },
      removeCallback(): void {
        onQueue(undefined);
      },
    };
  }

  createGauge = this.#noop.createGauge.bind(this.#noop);
  createHistogram = this.#noop.createHistogram.bind(this.#noop);
  createUpDownCounter = this.#noop.createUpDownCounter.bind(this.#noop);
  createObservableGauge = this.#noop.createObservableGauge.bind(this.#noop);
  createObservableCounter = this.#noop.createObservableCounter.bind(this.#noop);
  addBatchObservableCallback = this.#noop.addBatchObservableCallback.bind(this.#noop);
  removeBatchObservableCallback = this.#noop.removeBatchObservableCallback.bind(this.#noop);
}

/** What createTracing plugs into its exporter and its BatchSpanProcessor. */
export interface SpanExportObservation {
  exporter(inner: SpanExporter): SpanExporter;
  /** For BatchSpanProcessor's `selfObsMeterProvider`. */
  readonly processorMeters: MeterProvider;
  /** Stop reading the queue depth (the tracing shut down). */
  close(): void;
}

export function observeSpanExport(report: SpanExportReport): SpanExportObservation {
  const { metrics } = report;
  const log = new ExportLog(report.logger, report.now ?? Date.now);
  let unwatch: (() => void) | undefined;
  const meter = new SpanQueueMeter(
    (spans) => {
      metrics.recordSpansDropped(spans);
      log.dropped(spans);
    },
    (read) => {
      unwatch?.();
      unwatch = read === undefined ? undefined : metrics.watchSpanQueue(read);
    },
  );
  return {
    exporter: (inner) => new ObservedSpanExporter(inner, log, metrics),
    processorMeters: { getMeter: () => meter },
    close() {
      unwatch?.();
      unwatch = undefined;
    },
  };
}
