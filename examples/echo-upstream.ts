/**
 * A tiny upstream for trying Peregrine locally: answers every request with a JSON echo of what it
 * received (method, path, headers), so you can see what the gateway forwards.
 *
 *   npm run example:echo          # listens on 127.0.0.1:3001 (ECHO_PORT overrides)
 */
import { createServer } from 'node:http';

const port = Number(process.env.ECHO_PORT ?? 3001);
createServer((req, res) => {
  const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers }, null, 2);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}).listen(port, '127.0.0.1', () => {
  process.stdout.write(`echo upstream on http://127.0.0.1:${port}\n`);
});
