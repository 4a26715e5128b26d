/**
 * Pooled connections the upstream has closed while idle: a real upstream over raw sockets that
 * answers the first request of each connection and resets the connection on the first byte of the
 * next one, exactly what a request on a connection closed under it sees. The gateway sends such a
 * request again on a fresh connection, counts it as a stale connection, and holds nothing against
 * the endpoint (breaker closed, no failure). Also checked: a Peregrine listener advertises its
 * keep-alive timeout, which undici's pools stay under.
 */
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { metricValue } from '../helpers/tls-client.ts';

interface ClosingUpstream {
  url: string;
  /** Connections accepted, and requests answered. */
  connections: number;
  answered: number;
  /** Requests whose connection was reset as they arrived. */
  reset: number;
  close(): Promise<void>;
}

/** One answer per connection: 200 with keep-alive (no Keep-Alive hint), then a reset on the next byte. */
async function closingUpstream(): Promise<ClosingUpstream> {
  const sockets = new Set<Socket>();
  const up = { url: '', connections: 0, answered: 0, reset: 0 } as ClosingUpstream;
  const server: Server = createServer((socket) => {
    up.connections += 1;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let head = '';
    let served = false;
    socket.on('data', (chunk) => {
      if (served) {
        up.reset += 1;
        socket.resetAndDestroy();
        return;
      }
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      served = true;
      up.answered += 1;
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  up.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  up.close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return up;
}

const opened: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.close();
});

async function gatewayTo(up: ClosingUpstream, retries: Record<string, unknown> = {}): Promise<TestGateway> {
  const gw = await startGateway({
    upstreams: {
      u: {
        endpoints: [up.url],
        retries,
        // One failure counted against the endpoint would open the breaker.
        circuitBreaker: { consecutiveFailures: 1, openDuration: '60s' },
        outlierDetection: { consecutiveGatewayErrors: 1 },
      } as never,
    },
    routes: [{ name: 'r', upstream: 'u' }],
  });
  opened.push(gw);
  return gw;
}

async function metrics(gw: TestGateway): Promise<string> {
  return (await fetch(`${gw.adminUrl}/metrics`)).text();
}

describe('stale pooled connections', () => {
  it('sends a request that met a closed idle connection again on a fresh one, without a failure', async () => {
    const up = await closingUpstream();
    opened.push(up);
    // maxAttempts 1: the replay is the transport's, not a policy retry.
    const gw = await gatewayTo(up, { maxAttempts: 1 });
    for (let i = 0; i < 5; i++) {
      const res = await request(`${gw.url}/get/${i}`);
      expect(res.statusCode).toBe(200);
      expect(await res.body.text()).toBe('ok');
    }
    // Requests 2 and 4 met the pooled connection the one before had used and were reset; each was
    // sent again on a connection of its own (the upstream answers only a connection's first
    // request), which closed after it, so requests 3 and 5 found no idle connection.
    expect(up.reset).toBe(2);
    expect(up.answered).toBe(5);
    expect(up.connections).toBe(5);
    const text = await metrics(gw);
    expect(metricValue(text, 'peregrine_upstream_circuit_state', { upstream: 'u' })).toBe(0);
    expect(
      metricValue(text, 'peregrine_upstream_retries_total', { upstream: 'u', reason: 'stale_connection' }),
    ).toBe(2);
    expect(
      metricValue(text, 'peregrine_upstream_attempts_total', {
        upstream: 'u',
        endpoint: up.url,
        outcome: 'stale_connection',
      }),
    ).toBe(2);
    expect(
      metricValue(text, 'peregrine_upstream_attempts_total', {
        upstream: 'u',
        endpoint: up.url,
        outcome: 'reset',
      }),
    ).toBeUndefined();
  });

  it('does not send a POST whose body was written again, and still holds nothing against the endpoint', async () => {
    const up = await closingUpstream();
    opened.push(up);
    const gw = await gatewayTo(up);
    expect((await request(`${gw.url}/first`)).statusCode).toBe(200);
    const res = await request(`${gw.url}/post`, { method: 'POST', body: 'payload' });
    expect(res.statusCode).toBe(502);
    expect(((await res.body.json()) as { code: string }).code).toBe('UPSTREAM_RESET');
    expect(up.answered).toBe(1);
    const text = await metrics(gw);
    expect(metricValue(text, 'peregrine_upstream_circuit_state', { upstream: 'u' })).toBe(0);
    // The endpoint keeps taking requests.
    expect((await request(`${gw.url}/after`)).statusCode).toBe(200);
  });

  it("a Peregrine listener advertises its keep-alive timeout, and undici's pools idle below it", async () => {
    const up = await closingUpstream();
    opened.push(up);
    const gw = await gatewayTo(up);
    const res = await request(`${gw.url}/k`);
    await res.body.dump();
    // limits.keepAliveTimeout 5s: undici closes its idle connection 2 s (keepAliveTimeoutThreshold) before.
    expect(res.headers['keep-alive']).toBe('timeout=5');
  });
});
