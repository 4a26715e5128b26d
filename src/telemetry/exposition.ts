/**
 * A scrape: every metric of a registry as Prometheus text 0.0.4 or OpenMetrics 1.0, byte for byte
 * what prom-client's Registry#metrics() renders, but written in slices with a turn of the event
 * loop between them and handed to a sink chunk by chunk. At 10,000 active routes the text is
 * 20-30 MB; rendering it in one piece held the event loop for a second and built it twice in
 * memory (an object per sample, then the string).
 *
 * Families that render themselves (metric-cells.ts) do so in pieces of a few thousand characters.
 * prom-client's own metrics (the rarely updated ones and the default process metrics, a few
 * series each) go through Registry#getSingleMetricAsString, which reads the registry's content
 * type: the caller sets it for the whole render and runs one render per registry at a time
 * (metrics.ts).
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Counter, type Registry, type RegistryContentType } from 'prom-client';
import { rendersItself } from './metric-cells.ts';

/** Receives the text in order; a returned promise is awaited before more is written (backpressure). */
export type TextSink = (chunk: string) => void | Promise<void>;

/** How a render shares the event loop. */
export interface ExpositionPacing {
  /** Characters handed to the sink at once. */
  readonly chunkChars: number;
  /** A turn of the event loop after this many characters rendered since the last... */
  readonly sliceChars: number;
  /** ...or after this many ms, whichever comes first (a slow collect() among small families). */
  readonly sliceMs: number;
}

/**
 * About 0.2 ms of work a chunk and 1-2 ms a slice at 10,000 routes (bench/scale-scrape.ts): a
 * request that arrives during a scrape waits for about one slice at each of its turns of the event
 * loop (reading it, the upstream's answer, its end). 64 KB chunks also stay below V8's large
 * object size, so the flattened text is young garbage, not old space that brings a full GC
 * nearer.
 */
export const SCRAPE_PACING: ExpositionPacing = { chunkChars: 64 * 1024, sliceChars: 512 * 1024, sliceMs: 2 };

/**
 * Write `registry` to `sink`, giving the event loop a turn (setImmediate: pending I/O goes first)
 * after every slice. Resolves to the number of turns given.
 */
export async function writeExposition(
  registry: Registry<RegistryContentType>,
  openMetrics: boolean,
  sink: TextSink,
  pacing: ExpositionPacing = SCRAPE_PACING,
): Promise<number> {
  const { chunkChars, sliceChars, sliceMs } = pacing;
  let chunk = '';
  let sliceStart = performance.now();
  let sliceRendered = 0;
  let turns = 0;
  const add = async (text: string): Promise<void> => {
    chunk += text;
    sliceRendered += text.length;
    if (chunk.length >= chunkChars) {
      const full = chunk;
      chunk = '';
      await sink(full);
    }
    if (sliceRendered >= sliceChars || performance.now() - sliceStart >= sliceMs) {
      await nextTurn();
      turns++;
      sliceStart = performance.now();
      sliceRendered = 0;
    }
  };
  let first = true;
  // Typed by prom-client as its own metric objects; our own families are registered beside them.
  for (const metric of registry.getMetricsAsArray() as readonly (object & { name: string })[]) {
    if (!first) await add(openMetrics ? '\n' : '\n\n');
    first = false;
    if (rendersItself(metric)) {
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
  return turns;
}
