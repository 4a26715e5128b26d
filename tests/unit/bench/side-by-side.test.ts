import { describe, expect, it } from 'vitest';
import { peregrineConfig } from '../../../bench/lib/peregrine-config.ts';
import { geometricMean, median, warmUntil } from '../../../bench/lib/side-by-side-round.ts';
import { parseVariant } from '../../../bench/side-by-side.ts';

function configOf(spec: string) {
  const v = parseVariant(spec, '/repo');
  if (v.profile === 'bare-undici') throw new Error('bare-undici has no Peregrine config');
  const cfg = peregrineConfig({
    profile: v.profile,
    listenPort: 1,
    adminPort: 2,
    upstreamOrigin: 'http://127.0.0.1:3',
    otlpEndpoint: 'http://127.0.0.1:4',
  });
  v.tweak(cfg);
  return cfg.telemetry!;
}

describe('side-by-side variants', () => {
  it('takes a profile as the bench defines it', () => {
    expect(configOf('observed')).toMatchObject({
      accessLog: { enabled: true },
      tracing: { exporter: 'otlp', sampleRatio: 0.1 },
    });
    expect(configOf('passthrough')).toMatchObject({ accessLog: { enabled: false } });
  });

  it('switches one observed feature off, or changes the sampling ratio', () => {
    expect(configOf('observed:no-log')).toMatchObject({
      accessLog: { enabled: false },
      tracing: { exporter: 'otlp', sampleRatio: 0.1 },
    });
    expect(configOf('observed:no-trace')).toMatchObject({
      accessLog: { enabled: true },
      tracing: { exporter: 'none', sampleRatio: 0 },
    });
    expect(configOf('observed:ratio=0.01').tracing).toMatchObject({ exporter: 'otlp', sampleRatio: 0.01 });
  });

  it("changes the span export's batch size through the batch processor's variable, nothing else", () => {
    expect(parseVariant('observed:batch=128', '/repo').env).toEqual({
      OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '128',
    });
    expect(configOf('observed:batch=128')).toEqual(configOf('observed'));
    expect(parseVariant('observed', '/repo').env).toEqual({});
    expect(() => parseVariant('observed:batch=0', '/repo')).toThrow(/batch size/);
    expect(() => parseVariant('observed:batch=4096', '/repo')).toThrow(/batch size/);
    expect(() => parseVariant('passthrough:batch=128', '/repo')).toThrow(/only the observed profile/);
  });

  it('takes the bare undici forwarder as a side, the floor of the foundation goals', () => {
    expect(parseVariant('bare-undici', '/repo')).toMatchObject({
      label: 'bare-undici',
      profile: 'bare-undici',
    });
    expect(() => parseVariant('bare-undici:no-log', '/repo')).toThrow(/unknown profile/);
  });

  it('refuses what it does not know', () => {
    expect(() => parseVariant('nginx', '/repo')).toThrow(/unknown profile/);
    expect(() => configOf('observed:no-metrics')).toThrow(/unknown modifier/);
    expect(() => configOf('passthrough:no-log')).toThrow(/only the observed profile/);
  });
});

describe('side-by-side summary', () => {
  it('weighs both start orders alike in the geometric mean, unlike the median of four', () => {
    // Today's passthrough/ratelimit rounds: A first, B first, A first, B first.
    const ratios = [0.998, 1.186, 0.875, 1.196];
    expect(median(ratios)).toBeCloseTo(1.092, 3);
    expect(geometricMean(ratios)).toBeCloseTo(Math.sqrt(Math.sqrt(0.998 * 1.186 * 0.875 * 1.196)), 9);
    expect(geometricMean([1.1, 1 / 1.1])).toBeCloseTo(1, 12);
    expect(geometricMean([])).toBeNaN();
  });
});

describe('the warmup by requests', () => {
  it('loads once, then again until every side has had enough, within a bound', async () => {
    let loads = 0;
    const load = async () => {
      loads++;
      return [100, 40];
    };
    expect(await warmUntil(load, 0)).toEqual([100, 40]);
    expect(loads).toBe(1);
    loads = 0;
    // The slower side decides: 40 a load, 200 wanted.
    expect(await warmUntil(load, 200)).toEqual([500, 200]);
    expect(loads).toBe(5);
    loads = 0;
    expect(await warmUntil(load, 1_000_000, 3)).toEqual([300, 120]);
    expect(loads).toBe(3);
  });
});
