/**
 * TLS clients for the TLS/mTLS/HTTP/2 tests: one HTTPS request per new connection (HTTP/1.1), an
 * HTTP/2 session with request helpers, and reading a metric from the admin endpoint.
 */
import type { X509Certificate } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { type ClientHttp2Session, connect as h2connect, type OutgoingHttpHeaders } from 'node:http2';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import type { SecureVersion, TLSSocket } from 'node:tls';

export interface ClientTls {
  /** CA bundle trusted for the gateway's certificate. */
  ca: string;
  cert?: string;
  key?: string;
  servername?: string;
  minVersion?: SecureVersion;
  maxVersion?: SecureVersion;
  ciphers?: string;
}

export interface HttpsResult {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  /** The certificate the gateway presented on this connection. */
  peer: X509Certificate | undefined;
  alpn: string | false;
  protocol: string | null;
}

/** A client trusting `ca`, presenting `cert` (with its key) when given. */
export function clientTls(ca: string, cert?: { readonly cert: string; readonly key: string }): ClientTls {
  return cert ? { ca, cert: cert.cert, key: cert.key } : { ca };
}

/** One HTTP/1.1 request over a new TLS connection (no agent, no session reuse). */
export function httpsFetch(
  port: number,
  path: string,
  tls: ClientTls,
  init: { method?: string; headers?: Record<string, string>; body?: string; alpn?: string[] } = {},
): Promise<HttpsResult> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        method: init.method ?? 'GET',
        headers: init.headers,
        agent: false,
        ca: tls.ca,
        cert: tls.cert,
        key: tls.key,
        servername: tls.servername ?? 'localhost',
        minVersion: tls.minVersion,
        maxVersion: tls.maxVersion,
        ciphers: tls.ciphers,
        ...(init.alpn ? { ALPNProtocols: init.alpn } : {}),
      } as RequestOptions,
      (res) => {
        const socket = res.socket as TLSSocket;
        const peer = socket.getPeerX509Certificate();
        const alpn = socket.alpnProtocol ?? false;
        const protocol = socket.getProtocol();
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
            peer,
            alpn,
            protocol,
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(init.body);
  });
}

/** An HTTP/2 session to the gateway (ALPN h2 only). */
export function h2Session(port: number, tls: ClientTls): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = h2connect(`https://localhost:${port}`, {
      host: '127.0.0.1',
      ca: tls.ca,
      cert: tls.cert,
      key: tls.key,
      servername: tls.servername ?? 'localhost',
      ALPNProtocols: ['h2'],
    });
    session.once('connect', () => {
      session.off('error', reject);
      resolve(session);
    });
    session.once('error', reject);
  });
}

export interface H2Result {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * One HTTP/2 request. `body` may be a string or an async iterable of chunks (streamed, no
 * content-length). Rejects on a stream error (e.g. RST_STREAM from the gateway).
 */
export function h2Request(
  session: ClientHttp2Session,
  headers: OutgoingHttpHeaders,
  body?: string | AsyncIterable<string | Buffer>,
): Promise<H2Result> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: body === undefined });
    let status = 0;
    let head: Record<string, string | string[] | undefined> = {};
    const chunks: Buffer[] = [];
    stream.on('response', (h) => {
      status = Number(h[':status']);
      head = h as Record<string, string | string[] | undefined>;
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      if (status === 0) reject(new Error('stream ended without a response'));
      else resolve({ status, headers: head, body: Buffer.concat(chunks).toString() });
    });
    stream.on('error', reject);
    stream.on('close', () => {
      if (stream.rstCode)
        reject(Object.assign(new Error(`stream reset ${stream.rstCode}`), { rstCode: stream.rstCode }));
    });
    if (typeof body === 'string') stream.end(body);
    else if (body !== undefined) {
      void (async () => {
        for await (const chunk of body) {
          if (!stream.write(chunk)) await new Promise((r) => stream.once('drain', r));
        }
        stream.end();
      })();
    }
  });
}

export async function scrape(adminUrl: string): Promise<string> {
  return (await fetch(`${adminUrl}/metrics`)).text();
}

/** Sum of the samples of `name` whose labels include `labels` (undefined when none). */
export function metricValue(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  let sum: number | undefined;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const brace = line.indexOf('{');
    const close = line.lastIndexOf('}');
    const labelText = brace >= 0 && brace < close ? line.slice(brace + 1, close) : '';
    const ok = Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`));
    if (!ok) continue;
    const value = Number(
      line
        .slice((close >= 0 ? close : name.length) + 1)
        .trim()
        .split(' ')[0],
    );
    sum = (sum ?? 0) + value;
  }
  return sum;
}
