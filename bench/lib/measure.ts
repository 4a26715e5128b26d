/**
 * Measuring one target once: start it, warm it up, load it with the CPU and RSS accounting
 * around the measured run, repeat the run (bounded) when other processes on the machine took a
 * real share of the CPU meanwhile, stop it.
 */
import { cpuWindow, machineCpuWindow, waitForQuiet } from './cpu.ts';
import { type LoadResult, totalErrors } from './load.ts';
import type { LoadGenerator } from './loadgen.ts';
import { pinTarget } from './pin.ts';
import type { Measurement, Settings } from './report.ts';
import { RssSampler, treeRssKiB } from './rss.ts';
import { fmtInt, fmtMs, fmtNum } from './table.ts';
import type { BenchContext, RunningTarget, Target } from './targets.ts';

/**
 * Other processes (% of one core) tolerated: before each target the bench waits for less, and a
 * measured run during which they used more is repeated (up to BENCH_RETRIES times).
 */
export const FOREIGN_PCT = 15;
const log = (s: string) => process.stderr.write(`${s}\n`);

interface Attempt {
  load: LoadResult;
  cpu: Measurement['cpu'];
  machineCpu: Measurement['machineCpu'];
}

/** One measured load run with the CPU accounting around it. */
async function measuredRun(
  ctx: BenchContext,
  running: RunningTarget,
  loadgen: LoadGenerator,
  settings: Settings,
): Promise<Attempt> {
  const targetCpu = cpuWindow(running.pid);
  const upstreamCpu = cpuWindow(ctx.upstream.proc.pid);
  const machineCpu = machineCpuWindow(() => [
    running.pid,
    ...(running.companions ?? []),
    ctx.upstream.proc.pid,
    ctx.otlp.proc.pid,
  ]);
  const load = await loadgen.run(running.url, {
    durationS: settings.durationS,
    connections: settings.connections,
    threads: settings.threads,
    headers: running.headers,
    ca: running.ca,
  });
  const t = targetCpu();
  const u = upstreamCpu();
  return {
    load,
    machineCpu: machineCpu(),
    cpu:
      t && u
        ? {
            targetPct: t.pctOfCore,
            targetUsPerReq: (t.ms * 1000) / Math.max(load.requests, 1),
            upstreamPct: u.pctOfCore,
          }
        : undefined,
  };
}

export async function measure(
  ctx: BenchContext,
  target: Target,
  loadgen: LoadGenerator,
  settings: Settings,
  round: number,
  position: number,
): Promise<Measurement> {
  const m: Measurement = { target: target.id, label: target.label, round, position };
  const tag = `[run ${round}] ${target.id}`;
  const skip = target.skipReason?.(ctx);
  if (skip) {
    log(`${tag}: ${skip}`);
    m.skipped = skip;
    return m;
  }
  const shared = () => [ctx.upstream.proc.pid, ctx.otlp.proc.pid];
  const quiet = await waitForQuiet(shared, FOREIGN_PCT, settings.quietWaitS * 1000);
  log(
    `${tag}: starting (other processes ${fmtNum(quiet.foreignPct, 0)}% of a core` +
      `${quiet.waitedMs > 1500 ? ` after waiting ${fmtNum(quiet.waitedMs / 1000, 0)} s for quiet` : ''})`,
  );
  let running: RunningTarget | undefined;
  try {
    running = await target.start(ctx);
    const r = running;
    if (ctx.pin) pinTarget(ctx.pin, r.pid);
    m.rssIdleMB = (treeRssKiB(r.pid) ?? 0) / 1024;
    const sampler = new RssSampler(r.pid);
    try {
      if (settings.warmupS > 0) {
        m.warmup = await loadgen.run(r.url, {
          durationS: settings.warmupS,
          connections: settings.connections,
          threads: settings.threads,
          headers: r.headers,
          ca: r.ca,
        });
      }
      // Measure; if other processes took a real share of the CPU meanwhile, wait for quiet and
      // measure again (bounded), keeping the least disturbed attempt.
      let best: Attempt | undefined;
      for (let attempt = 1; ; attempt++) {
        const a = await measuredRun(ctx, r, loadgen, settings);
        m.requestsSent = (m.requestsSent ?? m.warmup?.requests ?? 0) + a.load.requests;
        const foreign = a.machineCpu?.foreignPct ?? 0;
        if (!best || foreign < (best.machineCpu?.foreignPct ?? 0)) best = a;
        m.attempts = attempt;
        if (foreign <= FOREIGN_PCT || attempt > settings.retries) break;
        log(
          `${tag}: other processes used ${fmtNum(foreign, 0)}% of a core (${fmtInt(a.load.rps)} req/s); ` +
            `measuring again (${attempt}/${settings.retries})`,
        );
        await waitForQuiet(
          () => [...shared(), r.pid, ...(r.companions ?? [])],
          FOREIGN_PCT,
          settings.quietWaitS * 1000,
        );
      }
      m.load = best.load;
      m.cpu = best.cpu;
      m.machineCpu = best.machineCpu;
    } finally {
      m.rssMaxMB = sampler.stop().maxMB;
    }
    await r.stop();
    if (r.after) m.extra = await r.after();
    const l = m.load;
    log(
      `${tag}: ${fmtInt(l.rps)} req/s, p50 ${fmtMs(l.latencyMs.p50)} ms, p99 ${fmtMs(l.latencyMs.p99)} ms, ` +
        `max RSS ${fmtNum(m.rssMaxMB, 1)} MB, CPU ${fmtNum(m.cpu?.targetPct, 0)}% ` +
        `(${fmtNum(m.cpu?.targetUsPerReq, 1)} µs/req; upstream ${fmtNum(m.cpu?.upstreamPct, 0)}%, ` +
        `loadgen+bench ${fmtNum(m.machineCpu?.benchPct, 0)}%, softirq ${fmtNum(m.machineCpu?.softirqPct, 0)}%, ` +
        `other ${fmtNum(m.machineCpu?.foreignPct, 0)}%), errors ${totalErrors(l)}` +
        `${m.extra ? `, ${JSON.stringify(m.extra)}` : ''}`,
    );
  } catch (err) {
    m.error = (err as Error).message;
    log(`${tag}: FAILED: ${m.error}`);
    await running?.stop().catch(() => {});
  }
  return m;
}
