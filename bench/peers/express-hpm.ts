/**
 * What Node users reach for: express 5 with http-proxy-middleware 4 (httpxy underneath, with its
 * default keep-alive agent), configured the way its README shows.
 *
 *   PORT=8082 UPSTREAM=http://127.0.0.1:3001 node bench/peers/express-hpm.ts
 */
import express from 'express';
import { createProxyMiddleware } from 'http-proxy-middleware';
import { exitWithParent, listenPort, upstreamOrigin } from './peer.ts';

if (import.meta.main) {
  const app = express();
  app.use(createProxyMiddleware({ target: upstreamOrigin() }));
  const server = app.listen(listenPort(), '127.0.0.1');
  server.keepAliveTimeout = 60_000;
  exitWithParent(server);
}
