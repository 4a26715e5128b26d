/**
 * A remote registry followed through its watch API, against a real gateway running the registry:
 * the snapshot, then each change of the services followed (and only those), a service added while
 * following, the last known instances kept while the registry is gone, and its current set taken
 * once it is back. The server-sent events parser is checked on its own, chunked every way.
 */

import pino from 'pino';
import { Agent } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ConfigInput } from '../../src/config/schema.ts';
import { EventStreamParser, RegistryFollower } from '../../src/registry/follower.ts';
import type { InstanceChange } from '../../src/registry/store.ts';
import { eventually } from '../conformance/registry-store.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { freePort } from '../helpers/ports.ts';

const TOKEN = 'follower-test-token-0123456789abcdef';
const TOKEN_ENV = 'PEREGRINE_TEST_FOLLOWER_TOKEN';

let registryPort: number;
let gw: TestGateway;
const agent = new Agent();
const followers: RegistryFollower[] = [];

function gatewayConfig(): Partial<ConfigInput> {
  return {
    registry: {
      listener: { address: `127.0.0.1:${registryPort}` },
      credentials: { tokens: [{ name: 'tests', env: TOKEN_ENV, services: ['*'] }] },
      addresses: { allowLoopback: true },
    },
  };
}

async function put(service: string, id: string, port: number, state = 'active'): Promise<void> {
  const res = await fetch(`http://127.0.0.1:${registryPort}/v1/services/${service}/instances/${id}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ address: '10.0.0.1', port, state }),
  });
  expect(res.status).toBeLessThan(300);
}

async function remove(service: string, id: string): Promise<void> {
  const res = await fetch(`http://127.0.0.1:${registryPort}/v1/services/${service}/instances/${id}`, {
    method: 'DELETE',
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  expect(res.status).toBe(204);
}

function follower(services: string[], token = TOKEN): RegistryFollower {
  const f = new RegistryFollower({
    url: `http://127.0.0.1:${registryPort}`,
    services,
    dispatcher: agent,
    headers: { authorization: `Bearer ${token}` },
    logger: pino({ level: 'silent' }),
    backoff: { initialMs: 20, maxMs: 100 },
  });
  followers.push(f);
  f.start();
  return f;
}

const ports = (f: RegistryFollower, service: string) => f.list(service).map((i) => i.port);

beforeAll(async () => {
  process.env[TOKEN_ENV] = TOKEN;
  registryPort = await freePort();
  gw = await startGateway(gatewayConfig());
});
afterEach(async () => {
  for (const f of followers.splice(0)) await f.close();
});
afterAll(async () => {
  await gw?.close();
  await agent.close();
  delete process.env[TOKEN_ENV];
});

describe('RegistryFollower', () => {
  it('takes the snapshot, then every change of the services it follows, and only those', async () => {
    await put('orders', 'o-1', 8001);
    await put('users', 'u-1', 9001);
    const f = follower(['orders']);
    await f.synced();
    expect(ports(f, 'orders')).toEqual([8001]);
    expect(f.list('users')).toEqual([]);
    const changes: string[] = [];
    f.watch('orders', (c: InstanceChange) => changes.push(`${c.type}:${c.cause}:${c.instance.id}`));
    await put('orders', 'o-2', 8002);
    await put('orders', 'o-1', 8001, 'draining');
    await put('users', 'u-2', 9002);
    await remove('orders', 'o-2');
    await eventually(() =>
      expect(changes).toEqual(['upsert:registered:o-2', 'upsert:drained:o-1', 'remove:deregistered:o-2']),
    );
    expect(f.list('orders')).toMatchObject([{ id: 'o-1', state: 'draining', address: '10.0.0.1' }]);
    expect(f.list('users')).toEqual([]);
    expect(f.health()).toMatchObject({ store: 'remote', synced: true, lastError: null });
  });

  it('follows a service added later, its instances included', async () => {
    await put('billing', 'b-1', 7001);
    const f = follower(['orders']);
    await f.synced();
    expect(f.list('billing')).toEqual([]);
    f.follow('billing');
    await eventually(() => expect(ports(f, 'billing')).toEqual([7001]));
    await put('billing', 'b-2', 7002);
    await eventually(() => expect(ports(f, 'billing')).toEqual([7001, 7002]));
    expect(f.health().synced).toBe(true);
  });

  it('keeps the last known instances while the registry is gone, then takes its current set', async () => {
    await put('stock', 's-1', 6001);
    const f = follower(['stock']);
    await f.synced();
    expect(ports(f, 'stock')).toEqual([6001]);
    await gw.close();
    await eventually(() => expect(f.health().synced).toBe(false));
    expect(f.health().lastError).not.toBeNull();
    // Nothing is forgotten because the registry cannot be read.
    expect(ports(f, 'stock')).toEqual([6001]);
    // The embedded registry comes back empty, and then holds another instance.
    gw = await startGateway(gatewayConfig());
    await put('stock', 's-9', 6009);
    await eventually(() => expect(ports(f, 'stock')).toEqual([6009]), 5000);
    expect(f.health().synced).toBe(true);
  });

  it('is out of sync, and says why, while the registry refuses its credential', async () => {
    const f = follower(['orders'], 'not-a-credential-of-this-registry');
    await eventually(() => expect(f.health().lastError?.message).toContain('401'));
    expect(f.health().synced).toBe(false);
  });
});

describe('EventStreamParser', () => {
  const stream =
    ': a comment\n\nevent: snapshot\ndata: {"a":1}\n\nevent: change\r\ndata: line one\r\ndata: line two\r\n\r\ndata: plain\n\n';
  const expected = [
    ['snapshot', '{"a":1}'],
    ['change', 'line one\nline two'],
    ['message', 'plain'],
  ];

  it('reads events however the stream is cut', () => {
    for (let size = 1; size <= stream.length; size++) {
      const events: string[][] = [];
      const parser = new EventStreamParser((type, data) => events.push([type, data]));
      for (let i = 0; i < stream.length; i += size) parser.push(stream.slice(i, i + size));
      expect(events, `chunks of ${size}`).toEqual(expected);
    }
  });
});
