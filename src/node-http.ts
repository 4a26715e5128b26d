/**
 * The values the gateway takes from `node:http`, loaded with `require`. An ESM import of
 * `node:http` (even of one name) builds the module's namespace, which reads every export, and
 * three of them (`WebSocket`, `CloseEvent`, `MessageEvent`) are getters that load Node's bundled
 * copy of undici, fetch and WebSocket included, for code the gateway never runs (it uses the
 * undici package): 0.9 MB of live heap and 0.6 MB of external memory in the passthrough gateway
 * (bench/allocations.ts, after a full GC). Types still come from `node:http` with `import type`,
 * which costs nothing at run time.
 */
import { createRequire } from 'node:module';

type NodeHttp = typeof import('node:http');

const http = createRequire(import.meta.url)('node:http') as NodeHttp;

export const createServer: NodeHttp['createServer'] = http.createServer;
export const STATUS_CODES: NodeHttp['STATUS_CODES'] = http.STATUS_CODES;
export const ServerResponse: NodeHttp['ServerResponse'] = http.ServerResponse;
export type ServerResponse = import('node:http').ServerResponse;
