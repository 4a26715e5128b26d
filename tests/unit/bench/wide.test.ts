import type { AddressInfo } from 'node:net';
import { connect, createServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { connectionsTo } from '../../../bench/lib/wide.ts';
import { wideAddress, wideOrigins } from '../../../bench/peers/wide-upstream.ts';
import { wideConfigYaml } from '../../../bench/wide.ts';
import { ConfigSchema, crossCheck } from '../../../src/config/schema.ts';

const closers: (() => void)[] = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

describe('bench:wide', () => {
  it('spreads endpoints over loopback addresses, never a .0 or .255, all distinct', () => {
    expect(wideAddress(0)).toBe('127.0.0.1');
    expect(wideAddress(249)).toBe('127.0.0.250');
    expect(wideAddress(250)).toBe('127.0.1.1');
    const origins = wideOrigins(1000, 4000);
    expect(new Set(origins).size).toBe(1000);
    expect(origins.every((o) => /^http:\/\/127\.0\.\d+\.([1-9]\d?|1\d\d|2[0-4]\d|250):4000$/.test(o))).toBe(
      true,
    );
  });

  it('writes a valid gateway config with every endpoint and the upstream settings asked for', () => {
    const endpoints = wideOrigins(1000, 4000);
    const input = parse(
      wideConfigYaml(
        {
          name: 'checks-1s',
          dir: '/repo',
          endpoints,
          upstream: { healthCheck: { path: '/healthz', interval: '1s' } },
        },
        18080,
        18081,
      ),
    );
    const parsed = ConfigSchema.safeParse(input);
    expect(parsed.error?.issues ?? []).toEqual([]);
    expect(crossCheck(input)).toEqual([]);
    const bench = parsed.data!.upstreams.bench!;
    expect(bench.endpoints).toHaveLength(1000);
    expect(bench.healthCheck).toMatchObject({ path: '/healthz', interval: 1000 });
    expect(parsed.data!.telemetry.logLevel).toBe('warn');
  });

  it('counts the established connections a process holds to a port', async () => {
    const server = createServer((s) => s.on('error', () => undefined));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    closers.push(() => server.close());
    const { port } = server.address() as AddressInfo;
    expect(connectionsTo(process.pid, port)).toBe(0);
    const sockets: Socket[] = [];
    for (let i = 0; i < 3; i++) {
      const s = connect(port, '127.0.0.1');
      await new Promise((r) => s.once('connect', r));
      sockets.push(s);
    }
    closers.push(() => {
      for (const s of sockets) s.destroy();
    });
    expect(connectionsTo(process.pid, port)).toBe(3);
  });
});
