/**
 * OpenTelemetry for a service in the mesh, set up the way the OpenTelemetry docs tell Node users
 * to: the Node SDK with the HTTP auto-instrumentation, loaded before the application with
 * `node --import ./examples/mesh/instrument.ts app.ts`. Configured by the standard variables
 * (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_BSP_SCHEDULE_DELAY, ...); spans go out as
 * OTLP/HTTP JSON. W3C trace context (the SDK's default) is what Peregrine reads and writes, so the
 * application's spans sit between its sidecar's.
 */
import { register } from 'node:module';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { NodeSDK } from '@opentelemetry/sdk-node';

// ES modules are instrumented through the loader hook (`import http from 'node:http'`).
register('@opentelemetry/instrumentation/hook.mjs', import.meta.url);

const sdk = new NodeSDK({
  traceExporter: new OTLPTraceExporter(),
  instrumentations: [
    new HttpInstrumentation({
      // Probes are not traffic.
      ignoreIncomingRequestHook: (req) => req.url === '/ready',
    }),
  ],
});
sdk.start();

// Spans still queued go out before the process ends.
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    void sdk.shutdown().finally(() => process.exit(0));
  });
}
