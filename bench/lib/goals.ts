/**
 * Goal rows for the reports of the feature benchmarks (bench/registry.ts, bench/ratelimit.ts), in
 * the shape bench/run.ts's checks have, so one table prints them all with PASS/MISS.
 */
import type { Check } from './report.ts';

type Unit = Check['unit'];

const UNIT_TEXT: Record<Unit, string> = { ratio: '', MB: ' MB', ms: ' ms', '%': '%', count: '' };

/** A goal `value op limit`; n/a when the value could not be measured. */
export function goal(
  name: string,
  value: number | undefined,
  op: '≤' | '≥' | '=',
  limit: number,
  unit: Unit,
): Check {
  const met =
    value === undefined
      ? undefined
      : op === '≤'
        ? value <= limit
        : op === '≥'
          ? value >= limit
          : value === limit;
  return {
    name,
    value,
    unit,
    goal: `${op} ${limit}${UNIT_TEXT[unit]}`,
    result: met === undefined ? 'n/a' : met ? 'PASS' : 'MISS',
  };
}

/** A measured number shown beside the goals, judged by none. */
export function info(name: string, value: number | undefined, unit: Unit): Check {
  return { name, value, unit, result: 'info' };
}
