/**
 * `npm run bench`: one run on this machine comparing Peregrine with the bare minimum (an undici
 * forwarder), what Node users reach for (express + http-proxy-middleware), nginx, and the upstream
 * itself; and Peregrine with its features on and off (resilience layer off, JWT auth, TLS,
 * access log and tracing). Each target runs in its own process and is loaded by wrk from another; the whole
 * sequence runs twice, forward then reversed, and the mean per target is reported, with the ratios
 * Peregrine aims for. The report (markdown) goes to stdout, progress to stderr, and the raw results
 * to bench/results/<date>.json.
 *
 * Environment: BENCH_DURATION (s, default 10), BENCH_WARMUP (s, 3), BENCH_CONNECTIONS (50),
 * BENCH_THREADS (wrk threads, 1), BENCH_ROUNDS (2), BENCH_PIN (1: the target on a CPU of its own,
 * everything else on the others; bench/lib/pin.ts), BENCH_TARGETS (comma-separated ids, all; e.g.
 * `peregrine-passthrough,peregrine-lean` for one check; the order stays the canonical one),
 * BENCH_LOADGEN (wrk | autocannon), BENCH_QUIET_WAIT (s, 30: how long to wait before each target
 * for other processes to leave the CPU alone), BENCH_RETRIES (2: measured runs repeated when other
 * processes took more than 15% of a core), BENCH_PEREGRINE_DIR (measure the Peregrine in that
 * directory instead of a snapshot of this checkout's src/ taken at start), BENCH_KEEP_TMP=1 (keep
 * generated configs and logs).
 */
import { FOREIGN_PCT, measure } from './lib/measure.ts';
import { stopAll } from './lib/proc.ts';
import { checks, type Measurement, markdownReport, notesFor, summarise } from './lib/report.ts';
import { openSession, writeResults } from './lib/session.ts';
import { TARGETS, type Target } from './lib/targets.ts';

const log = (s: string) => process.stderr.write(`${s}\n`);

function selectTargets(): Target[] {
  const wanted = process.env.BENCH_TARGETS?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (!wanted?.length) return [...TARGETS];
  const unknown = wanted.filter((w) => !TARGETS.some((t) => t.id === w));
  if (unknown.length) {
    throw new Error(
      `BENCH_TARGETS: unknown ${unknown.join(', ')}; known: ${TARGETS.map((t) => t.id).join(', ')}`,
    );
  }
  return TARGETS.filter((t) => wanted.includes(t.id));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const targets = selectTargets();
  const session = await openSession('bench', log);
  const { ctx, settings, loadgen, machine } = session;
  const measurements: Measurement[] = [];
  try {
    log(
      `bench: ${targets.length} targets × ${settings.rounds} runs, ${settings.warmupS} s warmup + ${settings.durationS} s each, ` +
        `${settings.connections} connections, load generator ${loadgen.label}; upstream ${ctx.upstream.origin}`,
    );
    for (let round = 1; round <= settings.rounds; round++) {
      const order = round % 2 === 1 ? targets : [...targets].reverse();
      for (const [i, target] of order.entries()) {
        measurements.push(await measure(ctx, target, loadgen, settings, round, i + 1));
        await sleep(1000); // let sockets in TIME_WAIT and the upstream settle
      }
    }
  } finally {
    await session.close();
  }

  const summaries = summarise(measurements, targets);
  const cs = checks(summaries);
  const notes = notesFor(measurements, settings, FOREIGN_PCT);
  const report = {
    machine,
    settings,
    loadGeneratorLabel: loadgen.label,
    measurements,
    summaries,
    checks: cs,
    notes,
  };
  process.stdout.write(markdownReport(report));
  log(`bench: results written to ${writeResults('', machine.date, report)}`);
}

main().then(
  () => process.exit(0),
  async (err: unknown) => {
    log(`bench failed: ${(err as Error).stack ?? String(err)}`);
    await stopAll();
    process.exit(1);
  },
);
