import { describe, expect, it } from 'vitest';
import { metricSum, parseMetrics } from '../../../bench/lib/prom.ts';

const TEXT = `# HELP peregrine_registry_renewals_total Lease renewals.
# TYPE peregrine_registry_renewals_total counter
peregrine_registry_renewals_total{service="hb-0"} 120
peregrine_registry_renewals_total{service="hb-1"} 80
peregrine_registry_renewals_total{service="hb-10"} 5
peregrine_ratelimit_decisions_total{policy="accuracy",outcome="insured"} 3
peregrine_ratelimit_decisions_total{policy="accuracy",outcome="allowed"} 1000
peregrine_ratelimit_decisions_total{policy="other",outcome="insured"} 7
odd_label{path="a \\"quoted\\" value, with a comma",x="y"} 2.5
up 1
`;

describe('reading counters back from /metrics', () => {
  const samples = parseMetrics(TEXT);

  it('parses names, labels (escaped quotes and commas inside values) and values; skips comments', () => {
    expect(samples).toHaveLength(8);
    expect(samples.find((s) => s.name === 'odd_label')).toEqual({
      name: 'odd_label',
      labels: { path: 'a "quoted" value, with a comma', x: 'y' },
      value: 2.5,
    });
    expect(samples.find((s) => s.name === 'up')).toEqual({ name: 'up', labels: {}, value: 1 });
  });

  it('sums the samples whose labels match exactly', () => {
    expect(metricSum(samples, 'peregrine_registry_renewals_total')).toBe(205);
    // hb-1 is not a prefix match for hb-10
    expect(metricSum(samples, 'peregrine_registry_renewals_total', { service: 'hb-1' })).toBe(80);
    expect(
      metricSum(samples, 'peregrine_ratelimit_decisions_total', { policy: 'accuracy', outcome: 'insured' }),
    ).toBe(3);
    expect(metricSum(samples, 'peregrine_ratelimit_decisions_total', { outcome: 'insured' })).toBe(10);
    expect(metricSum(samples, 'no_such_metric')).toBe(0);
  });
});
