/**
 * What a key costs the memory rate-limit counters, to size `maxKeys`: heap bytes per key held (a
 * policy of one limit filled with distinct keys built as the gateway builds them, `a:` + an
 * address, `h:` + a header value; heap measured after a full GC before and after), how long the
 * expiry sweep holds the event loop when every key has expired (the longest turn, in the main
 * thread's CPU time), and the cost of a request for a
 * held key against a new key at the cap (which drops the oldest).
 *
 *   node --expose-gc bench/micro/memory-window-keys.ts [keys]   (default 100000)
 */
import { MemoryCounters } from '../../src/dataplane/filters/rate-limit/counters.ts';
import { MemoryWindow } from '../../src/dataplane/filters/rate-limit/memory-window.ts';
import { RateLimitSchema } from '../../src/dataplane/filters/rate-limit/schema.ts';
import { turns } from '../lib/turns.ts';
import { bench, header } from './harness.ts';

const KEYS = Number(process.argv[2] ?? 100_000);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with node --expose-gc');

/** A fresh string per key (not a slice of a shared one), as a socket's address or a header is. */
const fresh = (s: string): string => Buffer.from(s).toString('latin1');

const SHAPES: Record<string, (i: number) => string> = {
  ipv4: (i) => `a:${fresh(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`)}`,
  ipv6: (i) =>
    `a:${fresh(`2001:db8:85a3:8d3:1319:8a2e:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}`)}`,
  'header, 200 characters (the longest kept unhashed)': (i) => `h:${fresh(String(i).padStart(198, 'x'))}`,
};

header('expiry sweep of a full window, every key expired (in slices)');
for (let round = 0; round < 3; round++) {
  const w = new MemoryWindow(100, 1, 0, { maxKeys: KEYS, evicted: { value: 0 } });
  const realNow = Date.now;
  let now = realNow();
  Date.now = () => now;
  for (let i = 0; i < KEYS; i++) w.count(SHAPES.ipv6!(i), 1);
  now += 2_000;
  gc!();
  // The sweeper runs every second; wait for it, counting the event loop's turns meanwhile.
  const t = await turns(
    () =>
      new Promise<void>((resolve) => {
        const check = (): void => {
          if (w.size === 0) resolve();
          else setTimeout(check, 5);
        };
        check();
      }),
  );
  Date.now = realNow;
  console.log(
    `${KEYS.toLocaleString('en')} expired keys swept: longest turn ${t.longestMs.toFixed(2)} ms of the main thread's CPU (${t.turns} turns waited)`,
  );
  w.close();
}

function heapUsed(): number {
  gc!();
  gc!();
  return process.memoryUsage().heapUsed;
}

header(`heap per key held, ${KEYS.toLocaleString('en')} keys, one limit`);
for (const [name, shape] of Object.entries(SHAPES)) {
  const cfg = RateLimitSchema.parse({ limits: [{ points: 100, duration: '1h' }], maxKeys: KEYS });
  const before = heapUsed();
  const c = new MemoryCounters(cfg.limits, { maxKeys: KEYS, evicted: { value: 0 } });
  for (let i = 0; i < KEYS; i++) c.count(shape(i), 1);
  const held = heapUsed() - before;
  // A second limit holds the same key strings: only its entries are new.
  const two = RateLimitSchema.parse({
    limits: [
      { points: 100, duration: '1h' },
      { points: 10, duration: '1m' },
    ],
  });
  const before2 = heapUsed();
  const c2 = new MemoryCounters(two.limits, { maxKeys: KEYS, evicted: { value: 0 } });
  for (let i = 0; i < KEYS; i++) c2.count(shape(i), 1);
  const held2 = heapUsed() - before2;
  console.log(
    `${name.padEnd(52)} ${(held / KEYS).toFixed(0).padStart(5)} B/key; with a second limit ${(held2 / KEYS).toFixed(0)} B/key (${c.keys} and ${c2.keys} held)`,
  );
  c.close();
  c2.close();
}

header('a request: a key held, and a new key at the cap');
{
  const cap = KEYS;
  const growing = new MemoryWindow(1e9, 3600, 0, { maxKeys: 1e9, evicted: { value: 0 } });
  let fresh = 0;
  bench('count(), a new key below the cap', () => growing.count(SHAPES.ipv6!(fresh++), 1), 50_000);
  growing.close();
  const held = new MemoryWindow(1e9, 3600, 0, { maxKeys: cap, evicted: { value: 0 } });
  held.count('a:203.0.113.7', 1);
  bench('count(), a key held', () => held.count('a:203.0.113.7', 1), 1_000_000);
  const evicted = { value: 0 };
  const full = new MemoryWindow(1e9, 3600, 0, { maxKeys: cap, evicted });
  for (let i = 0; i < cap; i++) full.count(SHAPES.ipv6!(i), 1);
  let next = cap;
  bench(
    'count(), a new key at the cap (drops the oldest)',
    () => full.count(SHAPES.ipv6!(next++), 1),
    50_000,
  );
  console.log(`held ${full.size}, evicted ${evicted.value}`);
  held.close();
  full.close();
}
