/**
 * Turns measurements into the report: per-round tables, the mean over rounds, and the ratio
 * checks against Peregrine's targets, as markdown and as a JSON document.
 */
import type { MachineCpu } from './cpu.ts';
import type { LoadResult } from './load.ts';
import { totalErrors } from './load.ts';
import type { MachineInfo } from './machine.ts';
import { type Align, fmtInt, fmtMs, fmtNum, markdownTable } from './table.ts';
import type { TargetId } from './targets.ts';

export interface Settings {
  durationS: number;
  warmupS: number;
  connections: number;
  threads: number;
  rounds: number;
  /** Longest wait, before each target, for the machine to be quiet. */
  quietWaitS: number;
  /** Measured runs repeated at most this often when other processes disturbed them. */
  retries: number;
  /** BENCH_PIN=1: taskset CPU lists of the target and of everything else. */
  pinned?: { target: string; rest: string } | undefined;
}

export interface Measurement {
  target: TargetId;
  label: string;
  /** 1-based round and position in that round's order. */
  round: number;
  position: number;
  skipped?: string;
  error?: string;
  warmup?: LoadResult;
  load?: LoadResult;
  /** RSS right after start, before any load. */
  rssIdleMB?: number;
  rssMaxMB?: number;
  /** During the measured run: the target's CPU (% of one core, and µs per request) and the upstream's. */
  cpu?: { targetPct: number; targetUsPerReq: number; upstreamPct: number };
  /** The whole machine during the measured run (% of one core). */
  machineCpu?: MachineCpu;
  /** Measured runs made (more than 1: earlier ones were disturbed by other processes). */
  attempts?: number;
  /** Requests wrk completed against this target: warmup and every measured attempt. */
  requestsSent?: number;
  extra?: Record<string, number>;
}

export interface Summary {
  target: TargetId;
  label: string;
  runs: number;
  rps?: number;
  p50Ms?: number;
  p99Ms?: number;
  /** Largest RSS seen in any round. */
  rssMaxMB?: number;
  rssIdleMB?: number;
  cpuPct?: number;
  cpuUsPerReq?: number;
  upstreamCpuPct?: number;
  /** (max - min) / mean of req/s over rounds, in percent: how much the rounds disagree. */
  rpsSpreadPct?: number;
  /** Socket errors and ≥ 400 responses over all measured runs. */
  errors: number;
  requests: number;
  skipped?: string;
  error?: string;
}

export interface Check {
  name: string;
  /** The target the check judges, and a short name for the summary table's "goals" column. */
  target?: TargetId;
  short?: string;
  value?: number;
  unit: 'ratio' | 'MB';
  /** e.g. "≥ 0.90"; absent for information-only rows. */
  goal?: string;
  result: 'PASS' | 'MISS' | 'n/a' | 'info';
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

export function summarise(
  measurements: readonly Measurement[],
  order: readonly { id: TargetId; label: string }[],
): Summary[] {
  return order.map(({ id, label }) => {
    const mine = measurements.filter((m) => m.target === id);
    const ok = mine.filter((m) => m.load);
    const loads = ok.map((m) => m.load!);
    const s: Summary = {
      target: id,
      label,
      runs: ok.length,
      errors: loads.reduce((a, l) => a + totalErrors(l), 0),
      requests: loads.reduce((a, l) => a + l.requests, 0),
    };
    const skipped = mine.find((m) => m.skipped)?.skipped;
    if (skipped) s.skipped = skipped;
    const error = mine.find((m) => m.error)?.error;
    if (error) s.error = error;
    if (!loads.length) return s;
    const rps = loads.map((l) => l.rps);
    s.rps = mean(rps);
    s.p50Ms = mean(loads.map((l) => l.latencyMs.p50));
    s.p99Ms = mean(loads.map((l) => l.latencyMs.p99));
    s.rpsSpreadPct = ((Math.max(...rps) - Math.min(...rps)) / s.rps) * 100;
    const rss = ok.map((m) => m.rssMaxMB).filter((x): x is number => x !== undefined);
    if (rss.length) s.rssMaxMB = Math.max(...rss);
    const idle = ok.map((m) => m.rssIdleMB).filter((x): x is number => x !== undefined);
    if (idle.length) s.rssIdleMB = mean(idle);
    const cpu = ok.map((m) => m.cpu).filter((x) => x !== undefined);
    if (cpu.length) {
      s.cpuPct = mean(cpu.map((c) => c.targetPct));
      s.cpuUsPerReq = mean(cpu.map((c) => c.targetUsPerReq));
      s.upstreamCpuPct = mean(cpu.map((c) => c.upstreamPct));
    }
    return s;
  });
}

export function checks(summaries: readonly Summary[]): Check[] {
  const by = (id: TargetId) => summaries.find((s) => s.target === id);
  const rps = (id: TargetId) => by(id)?.rps;
  const ratio = (a: TargetId, b: TargetId) => {
    const x = rps(a);
    const y = rps(b);
    return x !== undefined && y ? x / y : undefined;
  };
  const atLeast = (
    target: TargetId,
    short: string,
    name: string,
    value: number | undefined,
    goal: number,
  ): Check => ({
    name,
    target,
    short,
    value,
    unit: 'ratio',
    goal: `≥ ${goal.toFixed(2)}`,
    result: value === undefined ? 'n/a' : value >= goal ? 'PASS' : 'MISS',
  });
  const rssAtMost = (target: TargetId, name: string, value: number | undefined, goal: number): Check => ({
    name,
    target,
    short: 'RSS',
    value,
    unit: 'MB',
    goal: `≤ ${goal}`,
    result: value === undefined ? 'n/a' : value <= goal ? 'PASS' : 'MISS',
  });
  const info = (name: string, value: number | undefined): Check => ({
    name,
    value,
    unit: 'ratio',
    result: 'info',
  });
  const cpuRatio = (a: TargetId, b: TargetId) => {
    const x = by(a)?.cpuUsPerReq;
    const y = by(b)?.cpuUsPerReq;
    return x !== undefined && y ? x / y : undefined;
  };
  return [
    atLeast(
      'peregrine-passthrough',
      'vs bare',
      'passthrough / bare-undici (req/s)',
      ratio('peregrine-passthrough', 'bare-undici'),
      0.9,
    ),
    atLeast(
      'peregrine-observed',
      'vs bare',
      'observed / bare-undici (req/s)',
      ratio('peregrine-observed', 'bare-undici'),
      0.75,
    ),
    atLeast(
      'peregrine-passthrough',
      'vs express-hpm',
      'passthrough / express-hpm (req/s)',
      ratio('peregrine-passthrough', 'express-hpm'),
      2,
    ),
    atLeast(
      'peregrine-passthrough',
      'resilience on / off',
      'resilience on / off: passthrough / lean (req/s)',
      ratio('peregrine-passthrough', 'peregrine-lean'),
      0.95,
    ),
    atLeast(
      'peregrine-jwt',
      'vs passthrough',
      'jwt / passthrough (req/s)',
      ratio('peregrine-jwt', 'peregrine-passthrough'),
      0.85,
    ),
    atLeast(
      'peregrine-ratelimit',
      'vs passthrough',
      'rate limit (memory, not limiting) / passthrough (req/s)',
      ratio('peregrine-ratelimit', 'peregrine-passthrough'),
      0.95,
    ),
    rssAtMost(
      'peregrine-passthrough',
      'Peregrine passthrough max RSS under load',
      by('peregrine-passthrough')?.rssMaxMB,
      150,
    ),
    rssAtMost(
      'peregrine-observed',
      'Peregrine observed max RSS under load',
      by('peregrine-observed')?.rssMaxMB,
      150,
    ),
    info('https / passthrough (req/s)', ratio('peregrine-https', 'peregrine-passthrough')),
    info('observed / passthrough (req/s)', ratio('peregrine-observed', 'peregrine-passthrough')),
    info('passthrough / nginx (req/s)', ratio('peregrine-passthrough', 'nginx')),
    info('bare-undici / direct (req/s)', ratio('bare-undici', 'direct')),
    info('express-hpm / bare-undici (req/s)', ratio('express-hpm', 'bare-undici')),
    info('CPU per request: passthrough / bare-undici', cpuRatio('peregrine-passthrough', 'bare-undici')),
    info('CPU per request: observed / bare-undici', cpuRatio('peregrine-observed', 'bare-undici')),
    info('CPU per request: express-hpm / passthrough', cpuRatio('express-hpm', 'peregrine-passthrough')),
    info('CPU per request: passthrough / lean', cpuRatio('peregrine-passthrough', 'peregrine-lean')),
    info('CPU per request: jwt / passthrough', cpuRatio('peregrine-jwt', 'peregrine-passthrough')),
    info('CPU per request: https / passthrough', cpuRatio('peregrine-https', 'peregrine-passthrough')),
    info(
      'rate limit on Redis / passthrough (req/s)',
      ratio('peregrine-ratelimit-redis', 'peregrine-passthrough'),
    ),
    info(
      'CPU per request: rate limit on Redis / in memory',
      cpuRatio('peregrine-ratelimit-redis', 'peregrine-ratelimit'),
    ),
  ];
}

const ROUND_HEADERS = [
  'target',
  'req/s',
  'p50 ms',
  'p99 ms',
  'max RSS MB',
  'CPU %',
  'CPU µs/req',
  'upstream CPU %',
  'loadgen+bench CPU %',
  'softirq %',
  'other procs CPU %',
  'errors',
];

function roundTable(ms: readonly Measurement[]): string {
  const rows = ms.map((m) => {
    if (!m.load) return [m.target, m.skipped ?? `failed: ${firstLine(m.error)}`];
    return [
      m.target,
      fmtInt(m.load.rps),
      fmtMs(m.load.latencyMs.p50),
      fmtMs(m.load.latencyMs.p99),
      fmtNum(m.rssMaxMB, 1),
      fmtNum(m.cpu?.targetPct, 0),
      fmtNum(m.cpu?.targetUsPerReq, 1),
      fmtNum(m.cpu?.upstreamPct, 0),
      fmtNum(m.machineCpu?.benchPct, 0),
      fmtNum(m.machineCpu?.softirqPct, 0),
      `${fmtNum(m.machineCpu?.foreignPct, 0)}${(m.attempts ?? 1) > 1 ? ` (${m.attempts} tries)` : ''}`,
      errorCell(totalErrors(m.load), m.load.requests),
    ];
  });
  return markdownTable(ROUND_HEADERS, rows, ['left', ...ROUND_HEADERS.slice(1).map(() => 'right' as const)]);
}

function errorCell(errors: number, requests: number): string {
  if (!errors) return '0';
  return `${fmtInt(errors)} (${((errors / Math.max(requests, 1)) * 100).toFixed(2)}%)`;
}

function firstLine(s: string | undefined): string {
  return (s ?? '').split('\n')[0] ?? '';
}

function summaryTable(summaries: readonly Summary[], cs: readonly Check[]): string {
  const goals = (id: TargetId) =>
    cs
      .filter((c) => c.target === id && c.goal)
      .map((c) => `${c.short} ${c.result}`)
      .join(', ');
  const headers = [
    'target',
    'req/s',
    'p50 ms',
    'p99 ms',
    'idle RSS MB',
    'max RSS MB',
    'CPU %',
    'CPU µs/req',
    'run spread',
    'goals',
  ];
  const rows = summaries.map((s) => {
    if (s.rps === undefined) return [s.target, s.skipped ?? `failed: ${firstLine(s.error)}`];
    return [
      s.target,
      fmtInt(s.rps),
      fmtMs(s.p50Ms),
      fmtMs(s.p99Ms),
      fmtNum(s.rssIdleMB, 1),
      fmtNum(s.rssMaxMB, 1),
      fmtNum(s.cpuPct, 0),
      fmtNum(s.cpuUsPerReq, 1),
      `${fmtNum(s.rpsSpreadPct, 1)}%`,
      s.target === 'bare-undici' ? '(the floor)' : goals(s.target),
    ];
  });
  const align = headers.map((_, i) => (i === 0 || i === headers.length - 1 ? 'left' : 'right') as Align);
  return markdownTable(headers, rows, align);
}

function checkTable(cs: readonly Check[]): string {
  const rows = cs.map((c) => [
    c.name,
    c.unit === 'MB' ? `${fmtNum(c.value, 1)} MB` : fmtNum(c.value),
    c.goal ?? '',
    c.result === 'info' ? '' : c.result,
  ]);
  return markdownTable(['ratio / check', 'value', 'goal', 'result'], rows, ['left', 'right', 'left', 'left']);
}

/** Reading aids printed under the tables: what the targets include, failures, disturbed runs. */
export function notesFor(
  measurements: readonly Measurement[],
  settings: Settings,
  foreignPct: number,
): string[] {
  const notes = [
    'Peregrine metrics (prom-client histograms and counters) cannot be disabled: every Peregrine target pays for them.',
    'Passthrough: access log off, tracing exporter none with sampleRatio 0 (ids are still generated and a traceparent is still sent upstream).',
    "Lean: passthrough with the upstream's resilience layer off (balancer round_robin, retries.maxAttempts 1, circuitBreaker and outlierDetection disabled); passthrough keeps the defaults (peak-EWMA, retry budget, breaker, outlier detection).",
    'JWT: passthrough whose route requires a JWT (ES256, inline JWKS, issuer and audience checked). wrk sends the same token on every request, so this is the cached-verification path; readiness checked 200 with the token and 401 without one.',
    'HTTPS: passthrough on a TLS listener (self-signed P-256 certificate made at start); wrk speaks HTTP/1.1 over TLS with keep-alive, so handshakes (one per connection) are amortised.',
    'Observed: access log on (JSON lines to a file), OTLP/HTTP trace export to an in-bench sink at sampleRatio 0.1.',
    `Two cores are shared by wrk, the target and the upstream (and the OTLP sink): absolute numbers say little; compare the ratios, all taken from this one run.`,
  ];
  for (const m of measurements) {
    if (!m.load) continue;
    const errors = totalErrors(m.load);
    if (errors > 0) {
      notes.push(
        `${m.target} (run ${m.round}): ${errors} failed requests of ${m.load.requests} ` +
          `(socket errors ${JSON.stringify(m.load.errors)}, ≥400 responses ${m.load.non2xx3xx}).`,
      );
    }
  }
  for (const m of measurements) {
    if (m.target !== 'peregrine-observed' || !m.extra || !m.load) continue;
    const sent = m.requestsSent ?? m.load.requests;
    const spans = m.extra.otlpSpans ?? 0;
    notes.push(
      `peregrine-observed (run ${m.round}): ${fmtInt(m.extra.accessLogLines)} access-log lines for ${fmtInt(sent)} requests ` +
        `(warmup and every measured attempt; wrk does not count the ones in flight when it stops); the OTLP sink received ${fmtInt(m.extra.otlpExports)} exports with ${fmtInt(spans)} spans ` +
        `(${fmtNum((spans / Math.max(sent, 1)) * 100, 1)} spans per 100 requests; a sampled request makes a server and a client span).`,
    );
  }
  const noisy = measurements.filter((m) => (m.machineCpu?.foreignPct ?? 0) > foreignPct);
  if (noisy.length) {
    notes.push(
      `Other processes (not the bench's) used more than ${foreignPct}% of a core, even after ${settings.retries} retries, during: ${noisy
        .map((m) => `${m.target} run ${m.round} (${fmtNum(m.machineCpu?.foreignPct, 0)}%)`)
        .join(', ')}. Those numbers are skewed low.`,
    );
  }
  if (settings.rounds < 2)
    notes.push('Only one round: the order was not alternated, drift is not cancelled.');
  return notes;
}

export interface ReportInput {
  machine: MachineInfo;
  settings: Settings;
  loadGeneratorLabel: string;
  measurements: readonly Measurement[];
  summaries: readonly Summary[];
  checks: readonly Check[];
  notes: readonly string[];
}

export function markdownReport(r: ReportInput): string {
  const m = r.machine;
  const s = r.settings;
  const out: string[] = [];
  out.push(`## Peregrine proxy benchmark, ${m.date}`);
  out.push('');
  out.push(
    `Machine: ${m.cpuModel}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.kernel}; Node ${m.node}` +
      `${m.nginx ? `; nginx ${m.nginx}` : ''}.`,
  );
  out.push(
    m.peregrine.commit
      ? `Peregrine: commit ${m.peregrine.commit}${m.peregrine.srcDirty ? ' with uncommitted changes in src/' : ''}, ` +
          'as src/ was when the bench started (it runs a copy).'
      : `Peregrine: from ${m.peregrine.dir} (not a git checkout).`,
  );
  out.push(
    `Load: ${m.loadGenerator}${r.loadGeneratorLabel !== 'wrk' ? ` [${r.loadGeneratorLabel}]` : ''}, ` +
      `${s.threads} thread(s), ${s.connections} connections, ${s.warmupS} s warmup + ${s.durationS} s measured per target; ` +
      `${s.rounds} round(s) in alternating order (forward, then reversed). Latencies in ms, RSS in MB (MiB).`,
  );
  if (s.pinned)
    out.push(
      `CPU pinning (BENCH_PIN=1): the target on CPU ${s.pinned.target}; the bench, the load generator, the upstream ` +
        `and the OTLP sink on CPU ${s.pinned.rest}. req/s then follows the target's CPU per request more closely.`,
    );
  out.push(
    'CPU columns are % of one core during the measured run (the machine has ' +
      `${m.cores * 100}%): the target, the upstream, the load generator with the bench itself, interrupts/softirq (mostly the ` +
      "kernel's loopback TCP work for the bench's own traffic), and other processes that are not the bench's " +
      `(other users' test runs, VM steal; a run disturbed by more than 15% is measured again, up to ${s.retries} ` +
      "times, keeping the least disturbed). CPU µs/req is the target's CPU time per request.",
  );
  const rounds = [...new Set(r.measurements.map((x) => x.round))];
  for (const round of rounds) {
    const ms = r.measurements.filter((x) => x.round === round).sort((a, b) => a.position - b.position);
    out.push('', `### Run ${round} (${ms.map((x) => x.target).join(' → ')})`, '', roundTable(ms));
  }
  out.push(
    '',
    `### Mean of ${rounds.length} runs (load generator: ${m.loadGenerator})`,
    '',
    summaryTable(r.summaries, r.checks),
  );
  out.push('', '### Goals', '', checkTable(r.checks));
  if (r.notes.length) out.push('', '### Notes', '', ...r.notes.map((n) => `- ${n}`));
  return `${out.join('\n')}\n`;
}
