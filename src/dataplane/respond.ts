import type { Duplex } from 'node:stream';
import { ERROR_CODES, type ErrorCode, GatewayError, toProblem } from '../errors.ts';
import { type ServerResponse, STATUS_CODES } from '../node-http.ts';

/** Default response header naming the local decision behind a gateway-generated response. */
export const REASON_HEADER = 'x-peregrine-reason';

/** The ids a problem+json body carries, so a client's report leads to the access line and trace. */
export interface ProblemIds {
  readonly traceId?: string;
  readonly requestId?: string;
}

/**
 * Send a problem+json response for a local failure. Only for responses whose head has not been
 * sent; after that the only honest thing is to abort the connection. Returns the body bytes sent
 * (0 for HEAD), which the request's byte counts include.
 */
export function sendProblem(
  res: ServerResponse,
  err: GatewayError,
  ids: ProblemIds,
  closeConnection: boolean,
  reasonHeader: string | false = REASON_HEADER,
): number {
  const body = JSON.stringify(toProblem(err, ids));
  const bytes = Buffer.byteLength(body);
  const headers: Record<string, string | number> = {
    'content-type': 'application/problem+json',
    'content-length': bytes,
    'cache-control': 'no-store',
  };
  if (reasonHeader) headers[reasonHeader] = err.code;
  if (err.headers) Object.assign(headers, err.headers);
  if (closeConnection) headers.connection = 'close';
  res.writeHead(err.status, headers);
  if (res.req?.method === 'HEAD') {
    res.end();
    return 0;
  }
  res.end(body);
  return bytes;
}

/**
 * A problem+json answer for a connection that has no response object: errors Node's HTTP parser
 * reports before a request exists (framing, header size, header timeout) and refused upgrades.
 * Built once, so its size can be counted when the answer has to wait for earlier pipelined
 * responses.
 */
export interface RawProblem {
  readonly code: ErrorCode;
  readonly status: number;
  readonly body: string;
  /** Body bytes. */
  readonly bytes: number;
  /** Sent back as `x-request-id`, as on every other response. */
  readonly requestId: string | undefined;
}

export function rawProblem(code: ErrorCode, ids: ProblemIds): RawProblem {
  const body = JSON.stringify(toProblem(new GatewayError(code), ids));
  return {
    code,
    status: ERROR_CODES[code].status,
    body,
    bytes: Buffer.byteLength(body),
    requestId: ids.requestId,
  };
}

/**
 * Write a RawProblem straight to the socket and close it. Returns the body bytes written: 0 when
 * the socket was no longer writable.
 */
export function writeRawProblem(
  socket: Duplex,
  problem: RawProblem,
  reasonHeader: string | false = REASON_HEADER,
  extraHeaders?: Readonly<Record<string, string>>,
): number {
  if (!socket.writable) {
    socket.destroy();
    return 0;
  }
  let extra = problem.requestId === undefined ? '' : `x-request-id: ${problem.requestId}\r\n`;
  if (extraHeaders) for (const name in extraHeaders) extra += `${name}: ${extraHeaders[name]}\r\n`;
  socket.end(
    `HTTP/1.1 ${problem.status} ${STATUS_CODES[problem.status] ?? 'Error'}\r\n` +
      extra +
      'content-type: application/problem+json\r\n' +
      `content-length: ${problem.bytes}\r\n` +
      'cache-control: no-store\r\n' +
      (reasonHeader ? `${reasonHeader}: ${problem.code}\r\n` : '') +
      'connection: close\r\n\r\n' +
      problem.body,
  );
  return problem.bytes;
}
