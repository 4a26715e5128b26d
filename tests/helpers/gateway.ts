/**
 * Start a real in-process gateway on 127.0.0.1:0 with a config given as an object (or a file),
 * capturing its JSON log lines for assertions.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { stringify } from 'yaml';
import { loadConfigFile } from '../../src/config/loader.ts';
import { type ConfigInput, ConfigSchema } from '../../src/config/schema.ts';
import type { ProviderFactories } from '../../src/discovery/provider.ts';
import { Gateway } from '../../src/gateway.ts';

export interface LogCapture {
  lines(): Record<string, unknown>[];
  access(): Record<string, unknown>[];
  text(): string;
}

export function captureLogs(): { stream: Writable; capture: LogCapture } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  const lines = () =>
    chunks
      .join('')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return {
    stream,
    capture: { lines, access: () => lines().filter((l) => l.type === 'access'), text: () => chunks.join('') },
  };
}

/**
 * The gateway writes access lines in batches (up to 25 ms apart); reading the capture hands over
 * what is queued first, so a test sees every line of the requests it has finished.
 */
function flushingFirst(capture: LogCapture, flush: () => void): LogCapture {
  return {
    lines: () => {
      flush();
      return capture.lines();
    },
    access: () => {
      flush();
      return capture.access();
    },
    text: () => {
      flush();
      return capture.text();
    },
  };
}

export interface TestGateway {
  readonly gateway: Gateway;
  readonly url: string;
  readonly port: number;
  readonly adminUrl: string;
  readonly logs: LogCapture;
  readonly configFile: string | undefined;
  close(): Promise<void>;
}

/**
 * Listener and admin default to 127.0.0.1:0 (a sidecar's listeners are its own); everything else
 * comes from `input`.
 */
export function testConfig(input: Partial<ConfigInput>): ConfigInput {
  return {
    ...(input.mode === 'sidecar' ? {} : { listeners: [{ name: 'edge', address: '127.0.0.1:0' }] }),
    ...input,
    admin: { address: '127.0.0.1:0', ...input.admin },
    telemetry: { logLevel: 'info', ...input.telemetry },
    lifecycle: { watchConfig: false, ...input.lifecycle },
  };
}

export async function startGateway(
  input: Partial<ConfigInput>,
  opts: {
    spanProcessor?: SpanProcessor;
    asFile?: boolean;
    providers?: Partial<ProviderFactories>;
    /** The environment secret references are read from (default: the process's). */
    env?: NodeJS.ProcessEnv;
  } = {},
): Promise<TestGateway> {
  const { stream, capture } = captureLogs();
  const full = testConfig(input);
  let configFile: string | undefined;
  let config = ConfigSchema.parse(full);
  if (opts.asFile) {
    configFile = join(mkdtempSync(join(tmpdir(), 'peregrine-')), 'gateway.yaml');
    writeFileSync(configFile, stringify(full));
    config = await loadConfigFile(configFile);
  }
  const gateway = await Gateway.start({
    config,
    configFile,
    logDestination: stream,
    spanProcessor: opts.spanProcessor,
    providers: opts.providers,
    env: opts.env,
  });
  const addr = gateway.address();
  return {
    gateway,
    url: `http://127.0.0.1:${addr.port}`,
    port: addr.port,
    adminUrl: `http://127.0.0.1:${gateway.adminAddress.port}`,
    logs: flushingFirst(capture, () => gateway.telemetry.accessLog.flush()),
    configFile,
    close: () => gateway.shutdown(1000),
  };
}

/** Rewrite the gateway's config file (for reload tests). */
export function writeConfig(file: string, input: Partial<ConfigInput>): void {
  writeFileSync(file, stringify(testConfig(input)));
}
