/**
 * Two Peregrine variants measured side by side: both gateways run at the same time on the same CPU
 * (the last one), each loaded by its own wrk, with the upstream and the OTLP sink on the other
 * CPUs. The result is the ratio of their CPU time per request over the same seconds, so whatever
 * slows the machine down (other VMs, turbo, the host) slows both alike. On the shared 2-core VMs
 * this project is measured on, sequential runs of one and the same config drift by 20-40%; this
 * ratio repeats within about ±5%. Absolute µs per request are inflated (two processes share the
 * core's caches), so read the ratio only.
 *
 *   node bench/side-by-side.ts <A> [B] [--b-dir DIR] [--rounds N]
 *
 * A and B: passthrough, lean, observed, observed:no-log, observed:no-trace, observed:ratio=R,
 * observed:batch=N, ratelimit, registry (bench/lib/peregrine-config.ts; the `:` forms change the
 * observed profile's telemetry, batch=N its span export's batch size; registry registers the upstream through the registration API once it is up), or
 * bare-undici (the floor of `npm run bench`, bench/peers/bare-undici.ts: the foundation's goals
 * measured side by side, `bare-undici passthrough` and `bare-undici observed`). B defaults
 * to A; `--b-dir` runs B from another checkout (e.g. `git worktree add /tmp/base HEAD~1`), to price
 * a code change. Each round starts both afresh (even rounds B first: the order shows); 3 s warmup, then BENCH_DURATION (10) s measured,
 * BENCH_CONNECTIONS (25) per side. Needs wrk and taskset.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import type { ConfigInput } from '../src/config/schema.ts';
import { takeFlag } from './lib/args.ts';
import { type PeregrineProfile, peregrineConfig } from './lib/peregrine-config.ts';
import { pinPlan, pinSelf, pinTarget } from './lib/pin.ts';
import {
  findExecutable,
  freePort,
  installCleanup,
  type Managed,
  runMain,
  stopAll,
  waitForHttp,
} from './lib/proc.ts';
import { registerBenchUpstream } from './lib/registry-api.ts';
import { benchRegistryToken, REGISTRY_TOKEN_ENV } from './lib/registry-config.ts';
import { geometricMean, median, sideBySideRound } from './lib/side-by-side-round.ts';
import { startPeer, startPeregrine } from './lib/targets.ts';

const ROOT = join(import.meta.dirname, '..');
const log = (s: string) => process.stderr.write(`${s}\n`);

interface Variant {
  label: string;
  profile: PeregrineProfile | typeof BARE;
  tweak(cfg: ConfigInput): void;
  /** Environment the gateway starts with (`OTEL_*` from the bench's own environment never reach it). */
  env: Record<string, string>;
  dir: string;
}

/** Profiles that need no Redis: both sides share the machine, and a Redis would be a third process. */
const SIDE_BY_SIDE_PROFILES = ['passthrough', 'lean', 'observed', 'ratelimit', 'registry'];
/** The bare undici forwarder, the foundation goals' floor. */
const BARE = 'bare-undici';

/** `observed:no-log` and the like: a profile and a change to its telemetry. */
export function parseVariant(spec: string, dir: string): Variant {
  const [profile, mod] = spec.split(':', 2) as [string, string | undefined];
  if (spec === BARE) return { label: spec, profile: BARE, tweak: () => {}, env: {}, dir };
  if (!SIDE_BY_SIDE_PROFILES.includes(profile)) throw new Error(`unknown profile ${profile}`);
  if (mod !== undefined && profile !== 'observed')
    throw new Error(`${spec}: only the observed profile takes a modifier`);
  // batch=N: the span export's batch size (the batch processor's OTEL_BSP_MAX_EXPORT_BATCH_SIZE).
  const batch = mod?.startsWith('batch=') ? Number(mod.slice(6)) : undefined;
  if (batch !== undefined && !(Number.isInteger(batch) && batch >= 1 && batch <= 2048))
    throw new Error(`${spec}: the batch size is an integer from 1 to 2048 (the queue's size)`);
  const env: Record<string, string> =
    batch === undefined ? {} : { OTEL_BSP_MAX_EXPORT_BATCH_SIZE: String(batch) };
  const tweak = (cfg: ConfigInput): void => {
    const t = cfg.telemetry!;
    if (mod === undefined || batch !== undefined) return;
    if (mod === 'no-log') t.accessLog = { enabled: false };
    else if (mod === 'no-trace') t.tracing = { exporter: 'none', sampleRatio: 0 };
    else if (mod.startsWith('ratio=')) t.tracing = { ...t.tracing, sampleRatio: Number(mod.slice(6)) };
    else throw new Error(`${spec}: unknown modifier ${mod}`);
  };
  return { label: spec, profile: profile as PeregrineProfile, tweak, env, dir };
}

async function startVariant(
  v: Variant,
  tmp: string,
  side: string,
  upstreamOrigin: string,
  otlpEndpoint: string,
  pin: NonNullable<ReturnType<typeof pinPlan>>,
): Promise<{ proc: Managed; url: string; stop(): Promise<void> }> {
  if (v.profile === BARE) {
    const peer = await startPeer({ node: process.execPath, root: v.dir }, 'bare-undici.ts', {
      UPSTREAM: upstreamOrigin,
    });
    pinTarget(pin, peer.proc.pid);
    const url = `${peer.origin}/`;
    await waitForHttp(url, { proc: peer.proc });
    return { proc: peer.proc, url, stop: async () => void (await peer.proc.stop()) };
  }
  const profile = v.profile;
  const registryPort = profile === 'registry' ? await freePort() : undefined;
  const started = await startPeregrine({
    name: `peregrine-${side}`,
    dir: v.dir,
    configFile: join(tmp, `${side}.yaml`),
    yaml: (listenPort, adminPort) => {
      const cfg = peregrineConfig({
        profile,
        listenPort,
        adminPort,
        upstreamOrigin,
        otlpEndpoint,
        registryPort,
      });
      v.tweak(cfg);
      return stringify(cfg);
    },
    env: registryPort ? { ...v.env, [REGISTRY_TOKEN_ENV]: benchRegistryToken() } : v.env,
  });
  pinTarget(pin, started.proc.pid);
  // registry: the upstream is registered through the registration API, then served.
  const registration = registryPort
    ? await registerBenchUpstream(`http://127.0.0.1:${registryPort}`, upstreamOrigin)
    : undefined;
  await waitForHttp(started.url, { proc: started.proc });
  return {
    ...started,
    async stop() {
      await registration?.close();
      await started.proc.stop();
    },
  };
}

async function main(): Promise<void> {
  installCleanup(log);
  const args = process.argv.slice(2);
  const bDir = takeFlag(args, '--b-dir');
  const rounds = Number(takeFlag(args, '--rounds') ?? 3);
  if (args.length < 1 || args.length > 2 || !(rounds >= 1)) {
    throw new Error('usage: node bench/side-by-side.ts <A> [B] [--b-dir DIR] [--rounds N]');
  }
  const a = parseVariant(args[0]!, ROOT);
  const b = parseVariant(args[1] ?? args[0]!, bDir ? resolve(bDir) : ROOT);
  const pin = pinPlan({ BENCH_PIN: '1' }, availableParallelism());
  if (!pin) throw new Error('unreachable');
  const wrk = findExecutable('wrk', ['/usr/local/bin', '/usr/bin']);
  if (!wrk) throw new Error('side-by-side needs wrk (apt-get install wrk)');
  pinSelf(pin);
  const durationS = Number(process.env.BENCH_DURATION ?? 10);
  const warmupS = Number(process.env.BENCH_WARMUP ?? 3);
  const connections = Number(process.env.BENCH_CONNECTIONS ?? 25);
  const tmp = mkdtempSync(join(tmpdir(), 'peregrine-sbs-'));
  const ctx = { node: process.execPath, root: ROOT };
  const upstream = await startPeer(ctx, 'upstream.ts');
  const sink = await startPeer(ctx, 'otlp-sink.ts');
  await waitForHttp(`${upstream.origin}/`, { proc: upstream.proc });
  await waitForHttp(`${sink.origin}/stats`, { proc: sink.proc });
  const ratios: number[] = [];
  try {
    for (let round = 1; round <= rounds; round++) {
      // Even rounds start B first and hand it the first load generator: whichever side goes first
      // was measured up to 10% apart from an identical second (`passthrough passthrough`, B/A 0.87-1.01).
      const swap = round % 2 === 0;
      const [first, second] = swap ? [b, a] : [a, b];
      const g1 = await startVariant(first, tmp, swap ? 'b' : 'a', upstream.origin, sink.origin, pin);
      const g2 = await startVariant(second, tmp, swap ? 'a' : 'b', upstream.origin, sink.origin, pin);
      const [ga, gb] = swap ? [g2, g1] : [g1, g2];
      const r = await sideBySideRound(wrk, g1, g2, { warmupS, durationS, connections });
      const [usA, usB] = swap ? [r.usB, r.usA] : [r.usA, r.usB];
      const [ra, rb] = swap ? [r.b, r.a] : [r.a, r.b];
      ratios.push(usB / usA);
      console.log(
        `round ${round}${swap ? ' (B first)' : ''}: A ${a.label} ${usA.toFixed(1)} µs/req (${ra.requests} req), ` +
          `B ${b.label}${bDir ? ` (${bDir})` : ''} ${usB.toFixed(1)} µs/req (${rb.requests} req), B/A ${(usB / usA).toFixed(3)}`,
      );
      await Promise.all([ga.stop(), gb.stop()]);
    }
    console.log(
      `B/A CPU per request: median ${median(ratios).toFixed(3)}, range ${Math.min(...ratios).toFixed(3)}-${Math.max(...ratios).toFixed(3)} over ${rounds} round(s); geometric mean ${geometricMean(ratios).toFixed(3)}${rounds % 2 ? ' (odd rounds: one order counts once more)' : ' (both orders alike)'}`,
    );
  } finally {
    await stopAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (import.meta.main) runMain('side-by-side', main);
