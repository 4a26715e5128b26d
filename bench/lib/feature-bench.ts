/**
 * The frame of the feature benchmarks (bench/registry.ts, bench/ratelimit.ts): named groups of
 * measurements run in one session (bench/lib/session.ts), each adding a section to the report and
 * goal rows marked PASS/MISS; BENCH_GROUPS picks some. A group that fails is reported as failed
 * and the others still run. The report (markdown) goes to stdout, progress to stderr, the raw
 * results to bench/results/<name>-<date>.json.
 */
import { FOREIGN_PCT, measure } from './measure.ts';
import type { Check, Measurement } from './report.ts';
import { checks, checkTable, machineLines, summarise, summaryTable } from './report.ts';
import { type BenchSession, openSession, writeResults } from './session.ts';
import { fmtNum } from './table.ts';
import { TARGETS, type TargetId } from './targets.ts';

export const log = (s: string): void => void process.stderr.write(`${s}\n`);
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface GroupResult {
  /** Markdown under the group's heading (tables). */
  body: string;
  checks: Check[];
  notes?: string[];
  /** Raw numbers for the JSON results. */
  data: unknown;
}

export interface Group {
  id: string;
  title: string;
  run(session: BenchSession): Promise<GroupResult>;
}

const SHARED_MACHINE =
  'The gateways, load generators, upstreams and Redis share the machine’s cores: absolute numbers say little, and a run while other work uses the machine says less ("other processes": CPU that went to processes not the bench’s, in % of one core). Compare within one run, and run it when the machine is otherwise idle.';

interface Section extends Partial<GroupResult> {
  id: string;
  title: string;
  error?: string;
}

/** The groups BENCH_GROUPS names (all when unset); throws on an unknown one. */
export function selectGroups<G extends { id: string }>(
  all: readonly G[],
  raw = process.env.BENCH_GROUPS,
): G[] {
  const wanted = raw
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (!wanted?.length) return [...all];
  const unknown = wanted.filter((w) => !all.some((g) => g.id === w));
  if (unknown.length)
    throw new Error(`BENCH_GROUPS: unknown ${unknown.join(', ')}; known: ${all.map((g) => g.id).join(', ')}`);
  return all.filter((g) => wanted.includes(g.id));
}

export async function runFeatureBench(o: {
  name: string;
  title: string;
  groups: readonly Group[];
}): Promise<void> {
  const groups = selectGroups(o.groups);
  const session = await openSession(o.name, log);
  const sections: Section[] = [];
  try {
    for (const g of groups) {
      log(`${o.name}: ${g.id}`);
      try {
        sections.push({ id: g.id, title: g.title, ...(await g.run(session)) });
      } catch (err) {
        log(`${o.name}: ${g.id} FAILED: ${(err as Error).stack ?? String(err)}`);
        sections.push({ id: g.id, title: g.title, error: (err as Error).message });
      }
    }
  } finally {
    await session.close();
  }
  const { machine, settings } = session;
  const out = [`## ${o.title}, ${machine.date}`, '', ...machineLines(machine)];
  if (settings.pinned)
    out.push(
      `CPU pinning (BENCH_PIN=1): the gateways on CPU ${settings.pinned.target}; the bench, load generators, ` +
        `upstreams and Redis on CPU ${settings.pinned.rest}, unless a section says otherwise.`,
    );
  for (const s of sections) {
    out.push('', `### ${s.title}`, '');
    out.push(s.error ? `Failed: ${s.error}` : (s.body ?? ''));
  }
  const all = sections.flatMap((s) => s.checks ?? []);
  out.push('', '### Goals', '', checkTable(all));
  const notes = [...sections.flatMap((s) => s.notes ?? []), SHARED_MACHINE];
  out.push('', '### Notes', '', ...notes.map((n) => `- ${n}`));
  process.stdout.write(`${out.join('\n')}\n`);
  const file = writeResults(`${o.name}-`, machine.date, { machine, settings, sections });
  log(`${o.name}: results written to ${file}`);
}

/** A group that measures once per store kind (memory, Redis) and reports the results together. */
export function perStoreGroup<S extends string, R>(
  id: string,
  title: string,
  stores: readonly S[],
  measureOne: (session: BenchSession, store: S) => Promise<R>,
  present: (results: R[]) => GroupResult,
): Group {
  return {
    id,
    title,
    async run(session) {
      const results: R[] = [];
      for (const store of stores) results.push(await measureOne(session, store));
      return present(results);
    },
  };
}

/**
 * A group measuring bench/run.ts targets the way it does (fresh start per run, warmup, wrk,
 * alternating order over BENCH_ROUNDS, CPU and RSS), reporting their summary and the run.ts checks
 * `keep` selects.
 */
export function throughputGroup(
  id: string,
  title: string,
  ids: readonly TargetId[],
  keep: (c: Check) => boolean,
): Group {
  return {
    id,
    title,
    async run({ ctx, loadgen, settings }) {
      const targets = TARGETS.filter((t) => ids.includes(t.id));
      const measurements: Measurement[] = [];
      for (let round = 1; round <= settings.rounds; round++) {
        const order = round % 2 === 1 ? targets : [...targets].reverse();
        for (const [i, target] of order.entries()) {
          measurements.push(await measure(ctx, target, loadgen, settings, round, i + 1));
          await sleep(1000);
        }
      }
      const summaries = summarise(measurements, targets);
      const cs = checks(summaries).filter(keep);
      const notes: string[] = [];
      for (const m of measurements) {
        if (m.error) notes.push(`${m.target} (run ${m.round}) failed: ${m.error.split('\n')[0]}`);
        const foreign = m.machineCpu?.foreignPct ?? 0;
        if (foreign > FOREIGN_PCT)
          notes.push(
            `${m.target} (run ${m.round}): other processes used ${fmtNum(foreign, 0)}% of a core; its req/s is skewed low.`,
          );
      }
      return {
        body:
          `${settings.rounds} run(s) per target, alternating order, ${settings.warmupS} s warmup + ${settings.durationS} s ` +
          `measured, ${loadgen.label} with ${settings.connections} connections; the mean over runs:\n\n${summaryTable(summaries, cs)}`,
        checks: cs,
        notes,
        data: { measurements, summaries },
      };
    },
  };
}
