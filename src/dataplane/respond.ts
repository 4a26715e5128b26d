import { type ServerResponse, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { ERROR_CODES, type ErrorCode, type GatewayError, toProblem } from '../errors.ts';

/** Default response header naming the local decision behind a gateway-generated response. */
export const REASON_HEADER = 'x-peregrine-reason';

/**
 * Send a problem+json response for a local failure. Only for responses whose head has not been
 * sent; after that the only honest thing is to abort the connection.
 */
export function sendProblem(
  res: ServerResponse,
  err: GatewayError,
  ids: { traceId?: string; requestId?: string },
  closeConnection: boolean,
  reasonHeader: string | false = REASON_HEADER,
): void {
  const body = JSON.stringify(toProblem(err, ids));
  const headers: Record<string, string | number> = {
    'content-type': 'application/problem+json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  };
  if (reasonHeader) headers[reasonHeader] = err.code;
  if (err.headers) Object.assign(headers, err.headers);
  if (closeConnection) headers.connection = 'close';
  res.writeHead(err.status, headers);
  res.end(res.req?.method === 'HEAD' ? undefined : body);
}

/**
 * Write a problem+json response straight to a socket and close it: for errors Node's HTTP parser
 * reports before a request object exists (framing, header size, header timeout) and for
 * refused upgrades.
 */
export function writeRawProblem(
  socket: Duplex,
  code: ErrorCode,
  detail?: string,
  extraHeaders?: Readonly<Record<string, string>>,
  reasonHeader: string | false = REASON_HEADER,
): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const spec = ERROR_CODES[code];
  const problem: Record<string, unknown> = {
    type: `https://peregrine.dev/problems/${code.toLowerCase().replaceAll('_', '-')}`,
    title: spec.title,
    status: spec.status,
    code,
  };
  if (detail) problem.detail = detail;
  const body = JSON.stringify(problem);
  let extra = '';
  if (extraHeaders) for (const name in extraHeaders) extra += `${name}: ${extraHeaders[name]}\r\n`;
  socket.end(
    `HTTP/1.1 ${spec.status} ${STATUS_CODES[spec.status] ?? 'Error'}\r\n` +
      extra +
      'content-type: application/problem+json\r\n' +
      `content-length: ${Buffer.byteLength(body)}\r\n` +
      (reasonHeader ? `${reasonHeader}: ${code}\r\n` : '') +
      'connection: close\r\n\r\n' +
      body,
  );
}
