/**
 * Values of HTTP span attributes that are derived from what a request carries: the query string
 * as spans may show it, `server.address`/`server.port` from the Host, `network.protocol.version`.
 * Pure functions, called only for spans that are recorded.
 */

/** What replaces a query value on spans (the semantic conventions' word for it). */
export const REDACTED = 'REDACTED';

/**
 * A query string (with or without its `?`) as spans carry it: every parameter keeps its name and
 * loses its value (`page=REDACTED&sig=REDACTED`); a parameter without `=` is all value and becomes
 * `REDACTED`. The HTTP conventions ask that values of known credential keys (`sig`, `Signature`,
 * ...) be redacted and that anything else sensitive be scrubbed when it can be identified; a
 * gateway cannot tell an API's secret parameters from the others, so none of their values leave
 * it (as the access log leaves out the query altogether). Empty when there is no query.
 */
export function redactQuery(query: string): string {
  const from = query.charCodeAt(0) === 63 /* ? */ ? 1 : 0;
  if (query.length <= from) return '';
  let out = '';
  let start = from;
  while (start <= query.length) {
    let end = query.indexOf('&', start);
    if (end === -1) end = query.length;
    if (end > start) {
      const eq = query.indexOf('=', start);
      const part = eq !== -1 && eq < end ? `${query.slice(start, eq + 1)}${REDACTED}` : REDACTED;
      out = out === '' ? part : `${out}&${part}`;
    }
    start = end + 1;
  }
  return out;
}

/**
 * `server.address` and `server.port` of a SERVER span from the request's Host (or `:authority`):
 * the name the client used, and its port, or the scheme's default port when the Host names none
 * (so the server side matches what the client's own span says). Undefined without a Host.
 */
export function serverAddressOf(
  host: string | undefined,
  scheme: string,
): { address: string; port: number | undefined } | undefined {
  if (host === undefined || host === '') return undefined;
  let address: string;
  let portText: string | undefined;
  if (host.charCodeAt(0) === 91 /* [ */) {
    const end = host.indexOf(']');
    if (end === -1) return { address: host, port: undefined };
    address = host.slice(1, end);
    portText = host.charCodeAt(end + 1) === 58 /* : */ ? host.slice(end + 2) : undefined;
  } else {
    const colon = host.indexOf(':');
    address = colon === -1 ? host : host.slice(0, colon);
    portText = colon === -1 ? undefined : host.slice(colon + 1);
  }
  if (portText === undefined) return { address, port: defaultPort(scheme) };
  const port = Number(portText);
  return { address, port: portText !== '' && Number.isInteger(port) && port <= 65535 ? port : undefined };
}

function defaultPort(scheme: string): number | undefined {
  return scheme === 'https' ? 443 : scheme === 'http' ? 80 : undefined;
}

/** `network.protocol.version` of a request as Node parsed it: `1.0`, `1.1` or `2`. */
export function protocolVersionOf(req: {
  readonly httpVersionMajor: number;
  readonly httpVersion: string;
}): string {
  return req.httpVersionMajor === 2 ? '2' : req.httpVersion;
}
