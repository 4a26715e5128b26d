/**
 * bench:scale's configuration (scale-config.ts) loaded into a ConfigStore in this process, with
 * its metrics, for the benchmarks that measure reloads and scrapes in CPU time (scale-cpu.ts,
 * scale-scrape.ts); and scrapes written into a pipe to another process, whose CPU is not ours.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { loadConfigFile } from '../../src/config/loader.ts';
import { ConfigStore } from '../../src/control/config-store.ts';
import { createMetrics, type GatewayMetrics, writeMetrics } from '../../src/telemetry/metrics.ts';
import { type ScaleConfigOptions, scaleConfigYaml } from './scale-config.ts';

export interface ScaleStore {
  readonly store: ConfigStore;
  readonly metrics: GatewayMetrics;
  /** The configuration file: write `scaleConfigYaml({ ...options, extraRoutes })` to change it. */
  readonly file: string;
  readonly options: ScaleConfigOptions;
  close(): Promise<void>;
}

export async function openScaleStore(routes: number, exemplars: boolean): Promise<ScaleStore> {
  const dir = mkdtempSync(join(tmpdir(), 'peregrine-scale-store-'));
  const file = join(dir, 'scale.yaml');
  const options: ScaleConfigOptions = {
    routes,
    listenPort: 1,
    adminPort: 2,
    upstreamOrigin: 'http://127.0.0.1:9',
    extraRoutes: 0,
  };
  writeFileSync(file, scaleConfigYaml(options));
  const metrics = createMetrics({ exemplars, version: 'bench' });
  const store = new ConfigStore(await loadConfigFile(file, {}), {
    file,
    logger: pino({ enabled: false }),
    metrics,
    env: {},
  });
  return {
    store,
    metrics,
    file,
    options,
    async close() {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Run `body` with `scrape`, which writes one OpenMetrics scrape of `metrics` into a pipe to `cat`
 * (with its backpressure) and resolves to the characters written.
 */
export async function withScrapePipe(
  metrics: GatewayMetrics,
  body: (scrape: () => Promise<number>) => Promise<void>,
): Promise<void> {
  const reader = spawn('cat', [], { stdio: ['pipe', 'ignore', 'inherit'] });
  const sink = reader.stdin;
  const scrape = async (): Promise<number> => {
    let chars = 0;
    await writeMetrics(metrics, 'application/openmetrics-text', (chunk) => {
      chars += chunk.length;
      if (!sink.write(chunk)) return new Promise((resolve) => sink.once('drain', resolve));
    });
    return chars;
  };
  try {
    await body(scrape);
  } finally {
    sink.end();
    reader.kill();
  }
}
