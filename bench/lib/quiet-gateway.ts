/** The frame of the feature benchmarks' gateway configurations (registry-config, ratelimit-config). */
import type { ConfigInput } from '../../src/config/schema.ts';

/**
 * The parts of a feature benchmark's gateway that are always the same: one listener, the admin
 * port, warnings only, no access log, no trace export, no file watching, a short drain.
 */
export function quietGateway(
  name: string,
  listenPort: number,
  adminPort: number,
): Pick<ConfigInput, 'listeners' | 'admin' | 'telemetry' | 'lifecycle'> {
  return {
    listeners: [{ name: 'bench', address: `127.0.0.1:${listenPort}` }],
    admin: { address: `127.0.0.1:${adminPort}` },
    telemetry: {
      serviceName: `peregrine-bench-${name}`,
      logLevel: 'warn',
      tracing: { exporter: 'none', sampleRatio: 0 },
      accessLog: { enabled: false },
    },
    lifecycle: { watchConfig: false, drainTimeout: '1s' },
  };
}
