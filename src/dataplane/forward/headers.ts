/**
 * Header hygiene in both directions (RFC 9110 §7.6.1). Hop-by-hop headers never cross the
 * gateway; forwarding headers are only accepted from trusted proxies; headers the gateway itself
 * owns (host, request id, trace context) are replaced, never passed through from the client.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { GatewayError } from '../../errors.ts';

const DROP = 1;
const HOP_TE = 2;
const FORWARDING = 3;
const XFF = 4;
const HOST = 5;
const CONNECTION = 6;
const XFCC = 7;
const COOKIE = 8;

/** Request-header name (lower case) → how the gateway treats it. Names not here pass through. */
const REQUEST_RULES: ReadonlyMap<string, number> = new Map<string, number>([
  ['connection', CONNECTION],
  ['keep-alive', DROP],
  ['proxy-connection', DROP],
  ['proxy-authenticate', DROP],
  ['proxy-authorization', DROP],
  ['te', HOP_TE],
  ['trailer', DROP],
  ['transfer-encoding', DROP],
  ['upgrade', DROP],
  ['host', HOST],
  ['x-request-id', DROP],
  ['traceparent', DROP],
  ['tracestate', DROP],
  ['b3', DROP],
  ['x-b3-traceid', DROP],
  ['x-b3-spanid', DROP],
  ['x-b3-parentspanid', DROP],
  ['x-b3-sampled', DROP],
  ['x-b3-flags', DROP],
  ['x-forwarded-for', XFF],
  ['x-forwarded-proto', FORWARDING],
  ['x-forwarded-host', FORWARDING],
  ['x-forwarded-port', FORWARDING],
  ['forwarded', FORWARDING],
  // Identity the gateway asserts (mTLS): kept from a trusted proxy and appended to, else removed.
  ['x-forwarded-client-cert', XFCC],
  // HTTP/2 upgrade negotiation (RFC 7540 §3.2.1): h2c is never passed on.
  ['http2-settings', DROP],
  // HTTP/2 clients may split Cookie into several fields; HTTP/1.1 wants one (RFC 9113 §8.2.3).
  ['cookie', COOKIE],
]);

const RESPONSE_HOP_BY_HOP: readonly string[] = [
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
];

export interface OutboundRequestInfo {
  /** The peer is a configured trusted proxy: its X-Forwarded-* values are kept and extended. */
  readonly trusted: boolean;
  readonly peerAddress: string;
  readonly proto: 'http' | 'https';
  /** Host header to send upstream (the client's, or the route's rewrite, or the endpoint's). */
  readonly upstreamHost: string | undefined;
  readonly requestId: string;
  /** What to do with header names containing `_` (listener policy). */
  readonly underscores: 'drop' | 'reject' | 'allow';
  /** Client headers a route's filters own (claims → headers, Authorization): always removed. */
  readonly strip?: ReadonlySet<string> | undefined;
  /** This connection's verified client certificate as an X-Forwarded-Client-Cert element (mTLS). */
  readonly clientCert?: string | undefined;
  /**
   * false: add no X-Forwarded-For, -Proto or -Host. An outbound sidecar's upstream is a mesh
   * peer, which trusts no peer's forwarding headers and writes its own: sent, they would only be
   * encrypted, parsed and dropped.
   */
  readonly forwarding?: boolean | undefined;
}

/** Names listed in a Connection header value, lower-cased; `close`/`keep-alive` included. */
function connectionTokens(value: string, out: Set<string> = new Set<string>()): Set<string> {
  for (const token of value.split(',')) {
    const t = token.trim().toLowerCase();
    if (t) out.add(t);
  }
  return out;
}

/**
 * `Connection: keep-alive`, what most HTTP/1.1 clients send: it names only Keep-Alive, which is
 * dropped anyway, so it needs no set of names (two Sets and a split, ~250 bytes a request).
 */
function onlyKeepAlive(value: string): boolean {
  return value.length === 10 && (value === 'keep-alive' || value.toLowerCase() === 'keep-alive');
}

/**
 * Build the upstream request headers as a flat [name, value, ...] list from the raw client
 * headers. Throws GatewayError BAD_REQUEST on a duplicate Host.
 */
export function buildUpstreamHeaders(rawHeaders: readonly string[], info: OutboundRequestInfo): string[] {
  const out: string[] = [];
  let named: Set<string> | undefined;
  let clientHost: string | undefined;
  let xff: string | undefined;
  let sawXfp = false;
  let sawXfh = false;
  let authority: string | undefined;
  let xfcc: string | undefined;
  let cookieAt = -1;

  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    const value = rawHeaders[i + 1]!;
    const lower = name.toLowerCase();
    const rule = REQUEST_RULES.get(lower);
    if (rule === undefined) {
      // HTTP/2 pseudo-headers (`:method`, `:path`, ...) are never headers upstream; `:authority`
      // stands in for Host when there is none. (HTTP/1.1 names cannot start with `:`.)
      if (name.charCodeAt(0) === 58) {
        if (lower === ':authority') authority ??= value;
        continue;
      }
      if (named?.has(lower)) continue;
      if (info.strip?.has(lower)) continue;
      if (info.underscores !== 'allow' && name.includes('_')) {
        if (info.underscores === 'reject')
          throw new GatewayError('BAD_REQUEST', 'header names with underscores are not accepted');
        continue;
      }
      out.push(name, value);
      continue;
    }
    switch (rule) {
      case DROP:
        break;
      case CONNECTION:
        if (!onlyKeepAlive(value)) named = connectionTokens(value, named);
        break;
      case HOP_TE:
        if (value.trim().toLowerCase() === 'trailers') out.push(name, value);
        break;
      case HOST:
        if (clientHost !== undefined) throw new GatewayError('BAD_REQUEST', 'duplicate Host header');
        clientHost = value;
        break;
      case XFF:
        if (info.trusted) xff = xff === undefined ? value : `${xff}, ${value}`;
        break;
      case FORWARDING:
        if (info.trusted) {
          if (lower === 'x-forwarded-proto') sawXfp = true;
          else if (lower === 'x-forwarded-host') sawXfh = true;
          out.push(name, value);
        }
        break;
      case XFCC:
        if (info.trusted) xfcc = xfcc === undefined ? value : `${xfcc},${value}`;
        break;
      case COOKIE:
        if (cookieAt < 0) {
          cookieAt = out.length;
          out.push(name, value);
        } else out[cookieAt + 1] = `${out[cookieAt + 1]}; ${value}`;
        break;
    }
  }
  clientHost ??= authority;

  // A header named by Connection may have been seen before the Connection header itself.
  if (named !== undefined) {
    for (let i = out.length - 2; i >= 0; i -= 2) {
      const lower = out[i]!.toLowerCase();
      if (named.has(lower) && lower !== 'te') out.splice(i, 2);
    }
  }

  const host = info.upstreamHost ?? clientHost;
  if (host !== undefined) out.push('host', host);
  if (info.forwarding !== false) {
    out.push('x-forwarded-for', xff === undefined ? info.peerAddress : `${xff}, ${info.peerAddress}`);
    if (!sawXfp) out.push('x-forwarded-proto', info.proto);
    if (!sawXfh && clientHost !== undefined) out.push('x-forwarded-host', clientHost);
  }
  out.push('x-request-id', info.requestId);
  if (info.clientCert !== undefined)
    xfcc = xfcc === undefined ? info.clientCert : `${xfcc},${info.clientCert}`;
  if (xfcc !== undefined) out.push('x-forwarded-client-cert', xfcc);
  // For a WebSocket handshake undici writes `connection: upgrade` and `upgrade: websocket` itself
  // (it refuses them as headers), from the dispatch's `upgrade` option.
  return out;
}

const RESPONSE_DROP: ReadonlySet<string> = new Set(RESPONSE_HOP_BY_HOP);

/**
 * The client response head as a flat [name, value, ...] list, built in one pass over undici's
 * header object: hop-by-hop headers and every header the upstream's Connection names are left
 * out, the upstream's X-Request-Id is replaced by the gateway's, and `connection: close` is added
 * when asked, and so are the gateway's own headers (`extra`, [name, value, ...]: rate limit
 * fields). Deleting from undici's object instead (cleanResponseHeaders) turns it into a slow
 * dictionary that Node then walks; this list is what `writeHead` takes as it is.
 */
export function responseHeaderList(
  headers: IncomingHttpHeaders,
  requestId: string,
  close: boolean,
  extra?: readonly string[],
): (string | string[])[] {
  const connection = headers.connection;
  const named =
    typeof connection === 'string' && connection !== 'keep-alive' && connection !== 'close'
      ? connectionTokens(connection)
      : undefined;
  const out: (string | string[])[] = [];
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || RESPONSE_DROP.has(name) || name === 'x-request-id') continue;
    if (named?.has(name)) continue;
    out.push(name, value);
  }
  out.push('x-request-id', requestId);
  if (extra !== undefined) for (let i = 0; i < extra.length; i++) out.push(extra[i]!);
  if (close) out.push('connection', 'close');
  return out;
}

/**
 * Remove hop-by-hop headers (and every header the upstream's Connection names) from an upstream
 * response header object, in place, and return it.
 */
export function cleanResponseHeaders(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const connection = headers.connection;
  if (typeof connection === 'string' && connection.includes(',')) {
    for (const t of connectionTokens(connection)) delete headers[t];
  } else if (typeof connection === 'string') {
    delete headers[connection.trim().toLowerCase()];
  }
  for (const name of RESPONSE_HOP_BY_HOP) {
    if (headers[name] !== undefined) delete headers[name];
  }
  return headers;
}
