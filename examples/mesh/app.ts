/**
 * A service of the mesh demo: `GET /work` answers with its name and, when NEXT names another
 * service, what that service answered to its own `GET /work`, called as `http://<NEXT>/work`
 * through the sidecar's outbound listener, used as the HTTP proxy (NODE_USE_ENV_PROXY=1 with
 * HTTP_PROXY=http://127.0.0.1:15001; NO_PROXY keeps loopback, e.g. the trace collector, direct).
 * `GET /ready` is its readiness path, which its sidecar waits for before registering it.
 *
 *   PORT=8080 SERVICE=b NEXT=c node --import ./examples/mesh/instrument.ts examples/mesh/app.ts
 */
import http from 'node:http';

const port = Number(process.env.PORT ?? 8080);
const service = process.env.SERVICE ?? 'app';
const next = process.env.NEXT;

function callNext(path: string): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = http.get(`http://${next}${path}`, { timeout: 10_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        text += c;
      });
      res.on('end', () => {
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON: kept as text
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

const server = http.createServer((req, res) => {
  if (req.url === '/ready') {
    res.writeHead(200).end();
    return;
  }
  const reply = (status: number, body: unknown): void => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  const caller = req.headers['x-forwarded-client-cert'];
  if (next === undefined || !req.url?.startsWith('/work')) {
    reply(200, { service, caller: caller ?? null });
    return;
  }
  callNext(req.url).then(
    (answer) => reply(answer.status < 400 ? 200 : 502, { service, caller: caller ?? null, next: answer }),
    (err: Error) => reply(502, { service, error: err.message }),
  );
});

server.listen(port, '127.0.0.1', () => {
  console.log(
    JSON.stringify({ msg: 'listening', service, port: (server.address() as { port: number }).port }),
  );
});
process.once('SIGTERM', () => server.close());
