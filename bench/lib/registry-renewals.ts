/**
 * Renewals one at a time, for counting what a renewal costs (bench/instructions.ts's registry
 * targets). Each instance has a keep-alive connection of its own and renews over it with the
 * bytes Peregrine's RegistrationClient (undici) sends; the instances take turns and the next
 * request leaves only when the answer to the last one is in. So the gateway handles each renewal
 * alone, woken for it, as it does when 1,000 instances renew every 5 s (200/s, each a few hundred
 * µs): a load generator that keeps 50 requests in flight would batch reads, wakeups and timers and
 * price a renewal below what a fleet pays.
 */
import { connect, type Socket } from 'node:net';
import { fleetAddress } from '../peers/heartbeats.ts';

const HEAD_END = '\r\n\r\n';

/** One keep-alive connection that sends a request and reads one answer at a time. */
class Connection {
  readonly #socket: Socket;
  #buffer = '';
  #waiting: { resolve: (status: number) => void; reject: (err: Error) => void } | undefined;

  constructor(socket: Socket) {
    this.#socket = socket;
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.#buffer += chunk;
      this.#complete();
    });
    socket.on('error', (err) => this.#fail(err));
    socket.on('close', () => this.#fail(new Error('the connection closed')));
  }

  static open(port: number): Promise<Connection> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port, noDelay: true });
      socket.once('connect', () => resolve(new Connection(socket)));
      socket.once('error', reject);
    });
  }

  /** Send `request` (a whole HTTP/1.1 request); resolves with the answer's status. */
  send(request: string): Promise<number> {
    if (this.#waiting !== undefined) throw new Error('one request at a time');
    return new Promise((resolve, reject) => {
      this.#waiting = { resolve, reject };
      this.#socket.write(request, 'latin1');
    });
  }

  #complete(): void {
    const end = this.#buffer.indexOf(HEAD_END);
    if (end === -1 || this.#waiting === undefined) return;
    const head = this.#buffer.slice(0, end);
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
    const total = end + HEAD_END.length + length;
    if (this.#buffer.length < total) return;
    this.#buffer = this.#buffer.slice(total);
    const status = Number(head.slice(9, 12));
    const { resolve } = this.#waiting;
    this.#waiting = undefined;
    resolve(status);
  }

  #fail(err: Error): void {
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.reject(err);
  }

  close(): void {
    this.#socket.destroy();
  }
}

export interface RenewalFleetOptions {
  /** The registration API's port (127.0.0.1). */
  readonly port: number;
  readonly token: string;
  readonly instances: number;
  readonly services: number;
  readonly ttlMs: number;
}

/**
 * The bytes undici writes for a RegistrationClient call (no body: length 0); a heartbeat asks for
 * no instance back (`prefer: return=minimal`).
 */
function requestBytes(
  method: string,
  path: string,
  port: number,
  token: string,
  body: string | undefined,
): string {
  const prefer = body === undefined ? 'prefer: return=minimal\r\n' : '';
  return (
    `${method} ${path} HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\nconnection: keep-alive\r\n` +
    `content-type: application/json\r\nauthorization: Bearer ${token}\r\n${prefer}` +
    `content-length: ${body === undefined ? 0 : Buffer.byteLength(body)}\r\n\r\n${body ?? ''}`
  );
}

/** `instances` instances (service `hb-<i % services>`, id `i-<i>`), each on a connection of its own. */
export class RenewalFleet {
  readonly #connections: Connection[];
  readonly #registrations: string[];
  readonly #renewals: string[];
  #next = 0;

  private constructor(connections: Connection[], registrations: string[], renewals: string[]) {
    this.#connections = connections;
    this.#registrations = registrations;
    this.#renewals = renewals;
  }

  static async open(o: RenewalFleetOptions): Promise<RenewalFleet> {
    const connections: Connection[] = [];
    const registrations: string[] = [];
    const renewals: string[] = [];
    for (let i = 0; i < o.instances; i++) {
      const path = `/v1/services/hb-${i % o.services}/instances/i-${i}`;
      // What RegistrationClient sends: its spec as JSON, undefined fields left out.
      const spec = JSON.stringify({ address: fleetAddress(i), port: 8080, ttl: o.ttlMs });
      registrations.push(requestBytes('PUT', path, o.port, o.token, spec));
      renewals.push(requestBytes('POST', `${path}/heartbeat`, o.port, o.token, undefined));
      connections.push(await Connection.open(o.port));
    }
    return new RenewalFleet(connections, registrations, renewals);
  }

  /** Register every instance (one at a time); throws unless each answers 200 or 201. */
  async register(): Promise<void> {
    for (let i = 0; i < this.#connections.length; i++) {
      const status = await this.#connections[i]!.send(this.#registrations[i]!);
      if (status !== 200 && status !== 201) throw new Error(`registering i-${i} answered ${status}`);
    }
  }

  /**
   * `amount` renewals, the instances in turn, `wave` at a time (each over its own connection; the
   * next wave leaves when all of this one are answered); how many answered 200 or 204. `wave` 1: one in
   * flight at a time. More: renewals close enough together to share a store's batch, as a fleet's
   * do (200/s from 1,000 instances puts 10 within the Redis store's 50 ms).
   */
  async renew(amount: number, wave = 1): Promise<{ ok: number; failed: number }> {
    let ok = 0;
    for (let sent = 0; sent < amount; ) {
      const n = Math.min(wave, amount - sent, this.#connections.length);
      const answers: Promise<number>[] = [];
      for (let k = 0; k < n; k++) {
        const i = this.#next;
        this.#next = (i + 1) % this.#connections.length;
        answers.push(this.#connections[i]!.send(this.#renewals[i]!));
      }
      for (const status of await Promise.all(answers)) if (status === 200 || status === 204) ok++;
      sent += n;
    }
    return { ok, failed: amount - ok };
  }

  close(): void {
    for (const c of this.#connections) c.close();
  }
}
