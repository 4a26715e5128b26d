/**
 * A scrape: every metric of a registry as Prometheus text 0.0.4 or OpenMetrics 1.0, byte for byte
 * what prom-client's Registry#metrics() renders, but written in slices with a turn of the event
 * loop between them and handed to a sink chunk by chunk. At 10,000 active routes the text is
 * about 20 MB; rendering it in one piece held the event loop for a second and built it twice in
 * memory (an object per sample, then the string).
 *
 * Cell metrics (metric-cells.ts) render themselves in pieces. prom-client's own metrics (the
 * rarely updated ones and the default process metrics) are small and go through
 * Registry#getSingleMetricAsString, which reads the registry's content type: the caller sets it
 * for the whole render and runs one render per registry at a time (metrics.ts).
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Counter, type Registry, type RegistryContentType } from 'prom-client';
import { CellHistogram, CellMetric } from './metric-cells.ts';

/** Receives the text in order; a returned promise is awaited before more is written (backpressure). */
export type TextSink = (chunk: string) => void | Promise<void>;

/** Text handed to the sink at once: big enough to write efficiently, small enough to stream. */
const CHUNK_CHARS = 256 * 1024;

/**
 * Write `registry` to `sink`, giving the event loop a turn about every `sliceMs` (setImmediate:
 * pending I/O goes first) and the sink about `chunkChars` characters at a time.
 */
export async function writeExposition(
  registry: Registry<RegistryContentType>,
  openMetrics: boolean,
  sink: TextSink,
  sliceMs: number,
  chunkChars = CHUNK_CHARS,
): Promise<void> {
  let chunk = '';
  let sliceStart = performance.now();
  const add = async (text: string): Promise<void> => {
    chunk += text;
    if (chunk.length >= chunkChars) {
      const full = chunk;
      chunk = '';
      await sink(full);
    }
    if (performance.now() - sliceStart >= sliceMs) {
      await nextTurn();
      sliceStart = performance.now();
    }
  };
  let first = true;
  // Typed by prom-client as its own metric objects; cell metrics are registered beside them.
  for (const metric of registry.getMetricsAsArray() as readonly (object & { name: string })[]) {
    if (!first) await add(openMetrics ? '\n' : '\n\n');
    first = false;
    if (metric instanceof CellMetric || metric instanceof CellHistogram) {
      for (const piece of metric.render(openMetrics)) await add(piece);
      continue;
    }
    // prom-client names an OpenMetrics counter family without `_total` (and its samples with it).
    const name = metric.name;
    if (openMetrics && metric instanceof Counter) metric.name = name.replace(/_total$/, '');
    try {
      await add(await registry.getSingleMetricAsString(name));
    } finally {
      metric.name = name;
    }
  }
  chunk += openMetrics ? '\n# EOF\n' : '\n';
  await sink(chunk);
}
