/**
 * Hot-path metric series for prom-client's Registry.
 *
 * prom-client hashes the label object on every `inc`/`observe`, and its `labels(...)` children do
 * not cache that hash (a child is `inc.bind(this, labels)`), so caching children buys nothing:
 * measured in bench/micro/metrics.ts, a cached child is slower than `inc({labels})`. Here a series
 * is a plain object (a "cell") that the caller looks up once and then updates with `+=`; the
 * Registry only sees the cells when it formats a scrape. The objects below implement the part of
 * prom-client's metric shape that `Registry#metrics()` / `getMetricsAsJSON()` read (name, help,
 * type, aggregator, get, getForPromString, reset); tests/unit/telemetry/metric-cells.test.ts renders
 * them next to prom-client's own Counter and Histogram and requires identical output.
 *
 * A scrape does not go through those: `render()` writes the exposition text itself, from label
 * text formatted once per series, in pieces that the scrape (exposition.ts) spreads over turns of
 * the event loop. prom-client's path builds an object per sample first: at 10,000 routes that was
 * a second of blocked event loop and hundreds of MB of garbage per scrape.
 */
import type { Metric, Registry, RegistryContentType } from 'prom-client';

export type Labels = Readonly<Record<string, string>>;

/** One counter or gauge series. The owner adds to `value`; nothing else happens per update. */
export interface ScalarCell {
  readonly labels: Labels;
  value: number;
}

/** The last observation per bucket that carried a trace id (OpenMetrics exemplar). */
interface ExemplarSlot {
  traceId: string;
  value: number;
  timestamp: number;
}

/** One histogram series: per-bucket (not cumulative) counts, the last slot is +Inf. */
export interface HistogramCell {
  readonly labels: Labels;
  readonly counts: Float64Array;
  sum: number;
  count: number;
  readonly exemplars: (ExemplarSlot | undefined)[] | undefined;
}

/**
 * Characters per piece of render() output: a few tens of µs of work, so that a scrape can end
 * its slices where it likes (exposition.ts). A histogram series is about 2 KB of text.
 */
const PIECE_CHARS = 8 * 1024;
/** Sources a ReadGauge reads per piece: their reads, not their text, are its work. */
const SOURCES_PER_PIECE = 64;

/**
 * A series as a family holds it: its labels as exposition text (labelText), formatted once, and
 * when it was created. A render writes only the series that existed when it began: a scrape that
 * spans reloads (a slow scraper holds it for seconds) would otherwise write a route's series a
 * second time when a reload removed it after the render passed it and the next one created it
 * again, and Prometheus refuses a scrape with a duplicate series.
 */
interface SeriesEntry {
  readonly text: string;
  readonly seq: number;
}

function escapeString(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function escapeLabelValue(s: string): string {
  return escapeString(s).replace(/"/g, '\\"');
}

/** A label set as prom-client formats it: `a="x",b="y"`, escaped, in the object's key order. */
export function labelText(labels: Labels): string {
  let text = '';
  for (const [name, value] of Object.entries(labels)) {
    text += `${text === '' ? '' : ','}${name}="${escapeLabelValue(value)}"`;
  }
  return text;
}

/** A sample value as prom-client formats it. */
export function valueText(v: number): string {
  if (Number.isNaN(v)) return 'Nan';
  if (!Number.isFinite(v)) return v < 0 ? '-Inf' : '+Inf';
  return `${v}`;
}

/** `# HELP` and `# TYPE` lines of a family (no trailing newline, as prom-client joins them). */
function header(family: string, help: string, type: string): string {
  return `# HELP ${family} ${escapeString(help)}\n# TYPE ${family} ${type}`;
}

interface CellMetricConfig {
  name: string;
  help: string;
  labelNames: readonly string[];
  registry: Registry<RegistryContentType>;
}

/** Shape of one sample as prom-client's Registry formats it. */
interface Sample {
  value: number;
  labels: Record<string, string | number>;
  sharedLabels?: Labels;
  metricName?: string;
  exemplar?: { labelSet: Record<string, string>; value: number; timestamp: number } | null;
}

interface MetricSnapshot {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  values: Sample[];
  aggregator: 'sum';
}

function checkLabels(metric: string, labelNames: readonly string[], labels: Labels): void {
  const keys = Object.keys(labels);
  if (keys.length !== labelNames.length || !labelNames.every((n) => typeof labels[n] === 'string')) {
    throw new TypeError(`${metric}: labels ${keys.join(',')} do not match ${labelNames.join(',')}`);
  }
}

function register(registry: Registry<RegistryContentType>, metric: object): void {
  // The Registry only reads the duck-typed surface documented at the top of this file.
  registry.registerMetric(metric as unknown as Metric);
}

/** A counter or gauge whose series are ScalarCells. */
export class CellMetric {
  /** Mutable: prom-client's Registry strips `_total` from counter names while rendering OpenMetrics. */
  name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge';
  readonly aggregator = 'sum' as const;
  readonly labelNames: readonly string[];
  private readonly cells = new Map<ScalarCell, SeriesEntry>();
  private seq = 0;

  constructor(type: 'counter' | 'gauge', cfg: CellMetricConfig) {
    this.type = type;
    this.name = cfg.name;
    this.help = cfg.help;
    this.labelNames = cfg.labelNames;
    register(cfg.registry, this);
  }

  /** Create a series. Callers cache the cell; creating the same label set twice makes two series. */
  cell(labels: Labels): ScalarCell {
    checkLabels(this.name, this.labelNames, labels);
    const cell: ScalarCell = { labels, value: 0 };
    this.cells.set(cell, { text: labelText(labels), seq: ++this.seq });
    return cell;
  }

  /**
   * The family as exposition text, in pieces whose concatenation is what prom-client's
   * Registry#metrics() renders for it (without the separator between families). OpenMetrics
   * names a counter family without `_total` and its samples with it.
   */
  *render(openMetrics: boolean): Generator<string, void, void> {
    const name = escapeString(this.name);
    const family = openMetrics && this.type === 'counter' ? name.replace(/_total$/, '') : name;
    const sample = openMetrics && this.type === 'counter' ? `${family}_total` : name;
    yield header(family, this.help, this.type);
    const last = this.seq;
    let piece = '';
    for (const [cell, { text, seq }] of this.cells) {
      if (seq > last) continue;
      piece +=
        text === ''
          ? `\n${sample} ${valueText(cell.value)}`
          : `\n${sample}{${text}} ${valueText(cell.value)}`;
      if (piece.length >= PIECE_CHARS) {
        yield piece;
        piece = '';
      }
    }
    if (piece !== '') yield piece;
  }

  remove(cell: ScalarCell): void {
    this.cells.delete(cell);
  }

  reset(): void {
    for (const cell of this.cells.keys()) cell.value = 0;
  }

  async get(): Promise<MetricSnapshot> {
    const values: Sample[] = [];
    for (const cell of this.cells.keys()) values.push({ value: cell.value, labels: { ...cell.labels } });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

/** A histogram whose series are HistogramCells; exemplars (trace_id) kept per bucket when enabled. */
export class CellHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram' as const;
  readonly aggregator = 'sum' as const;
  readonly labelNames: readonly string[];
  readonly upperBounds: readonly number[];
  readonly exemplars: boolean;
  private readonly bounds: Float64Array;
  private readonly cells = new Map<HistogramCell, SeriesEntry>();
  private seq = 0;
  /** Per bucket, `{le="0.005"` as exposition text. */
  private readonly leText: readonly string[];

  constructor(cfg: CellMetricConfig & { buckets: readonly number[]; exemplars: boolean }) {
    this.name = cfg.name;
    this.help = cfg.help;
    this.labelNames = cfg.labelNames;
    this.upperBounds = [...cfg.buckets];
    this.bounds = Float64Array.from(cfg.buckets);
    this.exemplars = cfg.exemplars;
    if (cfg.labelNames.includes('le')) throw new Error('le is a reserved label name');
    this.leText = [...cfg.buckets.map((b) => `{le="${b}"`), '{le="+Inf"'];
    register(cfg.registry, this);
  }

  cell(labels: Labels): HistogramCell {
    checkLabels(this.name, this.labelNames, labels);
    const slots = this.bounds.length + 1;
    const cell: HistogramCell = {
      labels,
      counts: new Float64Array(slots),
      sum: 0,
      count: 0,
      exemplars: this.exemplars ? new Array<ExemplarSlot | undefined>(slots).fill(undefined) : undefined,
    };
    this.cells.set(cell, { text: labelText(labels), seq: ++this.seq });
    return cell;
  }

  remove(cell: HistogramCell): void {
    this.cells.delete(cell);
  }

  /**
   * Record one value. `traceId` (sampled requests only) becomes the bucket's exemplar when
   * exemplars are enabled. NaN and negative values are dropped rather than thrown on the hot path.
   */
  observe(cell: HistogramCell, value: number, traceId: string | undefined): void {
    if (!(value >= 0)) return;
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    cell.counts[i]! += 1;
    cell.sum += value;
    cell.count += 1;
    if (traceId !== undefined && cell.exemplars !== undefined) {
      const slot = cell.exemplars[i];
      const timestamp = Date.now() / 1000;
      if (slot === undefined) cell.exemplars[i] = { traceId, value, timestamp };
      else {
        slot.traceId = traceId;
        slot.value = value;
        slot.timestamp = timestamp;
      }
    }
  }

  reset(): void {
    for (const cell of this.cells.keys()) {
      cell.counts.fill(0);
      cell.sum = 0;
      cell.count = 0;
      cell.exemplars?.fill(undefined);
    }
  }

  /** As CellMetric#render: buckets (cumulative, exemplars in OpenMetrics), `_sum`, `_count`. */
  *render(openMetrics: boolean): Generator<string, void, void> {
    const name = escapeString(this.name);
    yield header(name, this.help, this.type);
    const bucket = `\n${this.name}_bucket`;
    const sum = `\n${this.name}_sum`;
    const count = `\n${this.name}_count`;
    const le = this.leText;
    const last = this.seq;
    let piece = '';
    for (const [cell, { text, seq }] of this.cells) {
      if (seq > last) continue;
      const labels = text === '' ? '} ' : `,${text}} `;
      const exemplars = openMetrics ? cell.exemplars : undefined;
      let acc = 0;
      for (let i = 0; i < le.length; i++) {
        acc += cell.counts[i]!;
        piece += `${bucket}${le[i]}${labels}${valueText(acc)}`;
        const slot = exemplars?.[i];
        if (slot !== undefined)
          piece += ` # {trace_id="${escapeLabelValue(slot.traceId)}"} ${valueText(slot.value)} ${slot.timestamp}`;
      }
      const plain = text === '' ? ' ' : `{${text}} `;
      piece += `${sum}${plain}${valueText(cell.sum)}${count}${plain}${valueText(cell.count)}`;
      if (piece.length >= PIECE_CHARS) {
        yield piece;
        piece = '';
      }
    }
    if (piece !== '') yield piece;
  }

  /** Samples with series labels in `sharedLabels`, the form Registry#metrics() formats. */
  async getForPromString(): Promise<MetricSnapshot> {
    const bucketName = `${this.name}_bucket`;
    const values: Sample[] = [];
    for (const cell of this.cells.keys()) {
      let acc = 0;
      for (let i = 0; i <= this.upperBounds.length; i++) {
        acc += cell.counts[i]!;
        const slot = cell.exemplars?.[i];
        values.push({
          labels: { le: i < this.upperBounds.length ? this.upperBounds[i]! : '+Inf' },
          sharedLabels: cell.labels,
          value: acc,
          metricName: bucketName,
          exemplar:
            slot === undefined
              ? null
              : { labelSet: { trace_id: slot.traceId }, value: slot.value, timestamp: slot.timestamp },
        });
      }
      values.push(
        { labels: {}, sharedLabels: cell.labels, value: cell.sum, metricName: `${this.name}_sum` },
        { labels: {}, sharedLabels: cell.labels, value: cell.count, metricName: `${this.name}_count` },
      );
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  /** JSON form (getMetricsAsJSON): series labels merged into each sample's labels. */
  async get(): Promise<MetricSnapshot> {
    const data = await this.getForPromString();
    data.values = data.values.map(({ sharedLabels, ...sample }) => ({
      ...sample,
      labels: { ...sample.labels, ...sharedLabels },
    }));
    return data;
  }
}

/** Receives a ReadGauge's series one by one. */
export type EmitSeries = (labels: Labels, value: number) => void;

/**
 * A gauge read at scrape time from live state, one source per key (an upstream's cluster, its
 * endpoint source): `read` emits the series of one source. Nothing is stored between scrapes,
 * so a source that goes away takes its series with it. A render reads the sources present when
 * it began, in pieces, so 1,000 upstreams cost no more than a piece between two turns of the
 * event loop (prom-client's collect() read and formatted them in one piece: 10-20 ms at 1,000
 * upstreams for the endpoint-state gauge alone).
 */
export class ReadGauge<S> {
  readonly name: string;
  readonly help: string;
  readonly type = 'gauge' as const;
  readonly aggregator = 'sum' as const;
  readonly labelNames: readonly string[];
  private readonly sources: ReadonlyMap<string, S>;
  private readonly read: (key: string, source: S, emit: EmitSeries) => void;

  constructor(
    cfg: CellMetricConfig & {
      sources: ReadonlyMap<string, S>;
      read: (key: string, source: S, emit: EmitSeries) => void;
    },
  ) {
    this.name = cfg.name;
    this.help = cfg.help;
    this.labelNames = cfg.labelNames;
    this.sources = cfg.sources;
    this.read = cfg.read;
    register(cfg.registry, this);
  }

  /** As CellMetric#render. */
  *render(_openMetrics: boolean): Generator<string, void, void> {
    const name = escapeString(this.name);
    yield header(name, this.help, this.type);
    const sources = [...this.sources];
    let piece = '';
    const emit: EmitSeries = (labels, value) => {
      const text = labelText(labels);
      piece += text === '' ? `\n${name} ${valueText(value)}` : `\n${name}{${text}} ${valueText(value)}`;
    };
    for (let i = 0; i < sources.length; i++) {
      const [key, source] = sources[i]!;
      this.read(key, source, emit);
      if (((i + 1) % SOURCES_PER_PIECE === 0 && piece !== '') || piece.length >= PIECE_CHARS) {
        yield piece;
        piece = '';
      }
    }
    if (piece !== '') yield piece;
  }

  /** Nothing is stored: the next scrape reads the sources again. */
  reset(): void {}

  async get(): Promise<MetricSnapshot> {
    const values: Sample[] = [];
    for (const [key, source] of this.sources)
      this.read(key, source, (labels, value) => values.push({ value, labels: { ...labels } }));
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

/** A family that writes its own exposition text in pieces (the scrape's fast path). */
export function rendersItself(metric: object): metric is CellMetric | CellHistogram | ReadGauge<unknown> {
  return metric instanceof CellMetric || metric instanceof CellHistogram || metric instanceof ReadGauge;
}
