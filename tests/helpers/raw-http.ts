/** Raw-socket HTTP for tests that must see exactly what goes over the wire. */
import { connect, type Socket } from 'node:net';

/** Send `payload` and collect everything until the server closes or `idleMs` passes with no data. */
export async function rawRequest(port: number, payload: string | Buffer, idleMs = 1500): Promise<string> {
  return (await rawExchange(port, payload, idleMs)).raw;
}

/**
 * `rawRequest`, also telling whether the server closed the connection (true) or it was still open
 * when `idleMs` passed with no data (false). With `then`, its payload follows once `ready()` holds
 * (checked every 10 ms, for up to 2 s): e.g. the rest of a body once the upstream saw the head.
 */
export function rawExchange(
  port: number,
  payload: string | Buffer,
  idleMs = 1500,
  then?: { ready: () => boolean; payload: string | Buffer },
): Promise<{ raw: string; closedByServer: boolean }> {
  return new Promise((resolve, reject) => {
    const socket: Socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    const done = (closedByServer: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ raw: Buffer.concat(chunks).toString('latin1'), closedByServer });
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => done(false), idleMs);
    };
    socket.on('connect', async () => {
      socket.write(payload);
      if (then) {
        for (let i = 0; i < 200 && !then.ready(); i++) await new Promise((r) => setTimeout(r, 10));
        socket.write(then.payload);
      }
      arm();
    });
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      arm();
    });
    socket.on('end', () => done(true));
    socket.on('close', () => done(true));
    socket.on('error', (err) => (chunks.length ? done(true) : reject(err)));
  });
}

/** Status codes of every response found in a raw byte stream, in order. */
export function statusCodes(raw: string): number[] {
  return [...raw.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
}

/** Parse the first response head of a raw stream into status and lower-cased header list. */
export function parseHead(raw: string): { status: number; headers: [string, string][] } {
  const head = raw.split('\r\n\r\n')[0] ?? '';
  const [statusLine, ...lines] = head.split('\r\n');
  return {
    status: Number(statusLine?.split(' ')[1]),
    headers: lines.map((l) => {
      const i = l.indexOf(':');
      return [l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()] as [string, string];
    }),
  };
}
