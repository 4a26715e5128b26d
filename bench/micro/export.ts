/**
 * OTLP serialisation cost per span: a batch of spans shaped like the gateway's (a SERVER and a
 * CLIENT span per request, with the attributes the pipeline sets) serialised as OTLP/HTTP JSON
 * and as OTLP/HTTP protobuf, as the batch exporter does off the request path.
 *
 *   node bench/micro/export.ts
 */
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { TelemetrySchema } from '../../src/config/schema.ts';
import { createTracing } from '../../src/telemetry/tracing.ts';
import { bench, header } from './harness.ts';
import { pipelineSpans } from './pipeline-spans.ts';

const BATCH = 512;
const spans: ReadableSpan[] = [];
const collect: SpanProcessor = {
  onStart() {},
  onEnd(span) {
    spans.push(span);
  },
  forceFlush: () => Promise.resolve(),
  shutdown: () => Promise.resolve(),
};
const tracing = createTracing(
  TelemetrySchema.parse({ serviceName: 'bench', tracing: { exporter: 'none', sampleRatio: 1 } }),
  { spanProcessorForTests: collect },
);
while (spans.length < BATCH) pipelineSpans(tracing, crypto.randomUUID());

header(`serialise a batch of ${BATCH} spans (ns per span)`);
const json = JsonTraceSerializer.serializeRequest(spans)!;
const proto = ProtobufTraceSerializer.serializeRequest(spans)!;
console.log(
  `bytes per span: json ${(json.length / BATCH).toFixed(0)}, protobuf ${(proto.length / BATCH).toFixed(0)}`,
);
const perSpan = (r: { nsPerOp: number; medianNsPerOp: number }) =>
  console.log(
    `  = ${(r.nsPerOp / BATCH).toFixed(0)} ns per span (median ${(r.medianNsPerOp / BATCH).toFixed(0)})`,
  );
perSpan(
  bench('OTLP/HTTP JSON (JsonTraceSerializer)', () => JsonTraceSerializer.serializeRequest(spans), 200, 15),
);
perSpan(
  bench(
    'OTLP/HTTP protobuf (ProtobufTraceSerializer)',
    () => ProtobufTraceSerializer.serializeRequest(spans),
    200,
    15,
  ),
);
