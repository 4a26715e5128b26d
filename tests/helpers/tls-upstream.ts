/**
 * A real TLS upstream for tests of the gateway's outbound TLS: HTTPS (HTTP/1.1) or HTTP/2 with an
 * HTTP/1.1 fallback, optionally requiring a client certificate. It records every TLS connection
 * (the SNI name, whether the session was resumed, the ALPN protocol, the client certificate's
 * serial and URI SANs) and the requests each one carried.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createSecureServer, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { readSubjectAltNames } from '../../src/tls/x509-der.ts';
import type { IssuedCert } from './certs.ts';

export interface TlsConnectionRecord {
  readonly servername: string | false;
  readonly resumed: boolean;
  readonly alpn: string | false;
  /** The client certificate's serial (upper-case hex), when one was presented. */
  readonly clientSerial: string | undefined;
  readonly clientUris: readonly string[];
  /** Requests served on it. */
  requests: number;
  /** When the handshake completed (performance.now()). */
  readonly at: number;
}

export interface TlsUpstreamOptions {
  readonly server: Pick<IssuedCert, 'cert' | 'key'>;
  /** Ask for, and require, a client certificate that chains to this CA (PEM). */
  readonly clientCa?: string;
  /** `h2`: an HTTP/2 server (with `allowHTTP1` as given, default true); default plain HTTPS. */
  readonly h2?: boolean;
  readonly allowHTTP1?: boolean;
  /** Answer every n-th request on a connection with `Connection: close` (HTTP/1.1). */
  readonly closeEvery?: number;
  /** Highest TLS version offered (TLS 1.2 hands the session to the client during the handshake). */
  readonly maxVersion?: 'TLSv1.2' | 'TLSv1.3';
}

export interface TlsUpstream {
  readonly port: number;
  /** `https://127.0.0.1:<port>` */
  readonly url: string;
  readonly connections: TlsConnectionRecord[];
  /** TCP connections accepted (failed handshakes included). */
  tcp: number;
  requests: number;
  /** HTTP versions of the requests served, in order. */
  readonly versions: string[];
  close(): Promise<void>;
}

type AnyReq = IncomingMessage | Http2ServerRequest;
type AnyRes = ServerResponse | Http2ServerResponse;

const kRecord = Symbol('record');

export async function startTlsUpstream(opts: TlsUpstreamOptions): Promise<TlsUpstream> {
  const tlsOptions = {
    cert: opts.server.cert,
    key: opts.server.key,
    ...(opts.maxVersion !== undefined ? { maxVersion: opts.maxVersion } : {}),
    ...(opts.clientCa !== undefined
      ? { ca: opts.clientCa, requestCert: true, rejectUnauthorized: true }
      : {}),
  };
  const sockets = new Set<Socket>();
  const up: TlsUpstream = {
    port: 0,
    url: '',
    connections: [],
    tcp: 0,
    requests: 0,
    versions: [],
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  const onRequest = (req: AnyReq, res: AnyRes): void => {
    up.requests++;
    up.versions.push(req.httpVersion);
    const record = (req.socket as unknown as Record<symbol, TlsConnectionRecord | undefined>)[kRecord];
    if (record !== undefined) record.requests++;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.stringify({
        path: req.url,
        host: req.headers.host ?? req.headers[':authority'],
        body: Buffer.concat(chunks).toString(),
      });
      const close =
        opts.closeEvery !== undefined && record !== undefined && record.requests % opts.closeEvery === 0;
      if (req.httpVersionMajor === 1 && close) (res as ServerResponse).setHeader('connection', 'close');
      (res as ServerResponse).writeHead(200, { 'content-type': 'application/json' });
      res.end(body);
    });
  };
  const server = opts.h2
    ? createSecureServer({ ...tlsOptions, allowHTTP1: opts.allowHTTP1 ?? true }, onRequest)
    : createHttpsServer(tlsOptions, onRequest);
  server.on('connection', (s: Socket) => {
    up.tcp++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
  });
  server.on('secureConnection', (s: TLSSocket) => {
    const peer = s.getPeerX509Certificate();
    const record: TlsConnectionRecord = {
      servername: s.servername ?? false,
      resumed: s.isSessionReused(),
      alpn: s.alpnProtocol ?? false,
      clientSerial: peer?.serialNumber,
      clientUris: peer === undefined ? [] : readSubjectAltNames(peer.raw).uris,
      requests: 0,
      at: performance.now(),
    };
    (s as unknown as Record<symbol, TlsConnectionRecord>)[kRecord] = record;
    up.connections.push(record);
  });
  server.on('tlsClientError', () => {});
  if (opts.h2) server.on('session', (session) => session.on('error', () => {}));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return Object.assign(up, { port, url: `https://127.0.0.1:${port}` });
}
