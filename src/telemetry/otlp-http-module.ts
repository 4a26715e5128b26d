/**
 * What the OTLP/HTTP exporter takes from `http`, for its dynamic `import('http')`, which the
 * resolve hook in exporter-http.ts points here. An ESM import of `http` builds Node's namespace of
 * the module, which reads every export, and three of them (`WebSocket`, `CloseEvent`,
 * `MessageEvent`) are getters that load Node's bundled copy of undici, fetch and WebSocket
 * included, for code the gateway never runs (src/node-http.ts says the same of the gateway's own
 * uses). The exporter reads `request` (its transport) and `Agent` (its default agent factory);
 * should a later version read another member, the OTLP tests, which export to a real receiver,
 * fail.
 */
import { createRequire } from 'node:module';

type NodeHttp = typeof import('node:http');

const http = createRequire(import.meta.url)('node:http') as NodeHttp;

export const request: NodeHttp['request'] = http.request;
export const Agent: NodeHttp['Agent'] = http.Agent;
