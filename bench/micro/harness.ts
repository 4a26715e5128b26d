/**
 * A minimal micro-benchmark loop: warm up, then time `rounds` batches of `iterations` calls and
 * report the fastest and the median batch in ns per call. On a shared machine the fastest batch
 * is the steadier figure (interference only ever adds time). For comparing variants on one
 * machine in one run, not absolute numbers.
 */
export interface BenchResult {
  name: string;
  /** Fastest batch. */
  nsPerOp: number;
  medianNsPerOp: number;
}

export function bench(name: string, fn: (i: number) => void, iterations = 200_000, rounds = 15): BenchResult {
  for (let i = 0; i < Math.min(iterations, 100_000); i++) fn(i);
  const samples: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) fn(i);
    samples.push(Number(process.hrtime.bigint() - start) / iterations);
  }
  samples.sort((a, b) => a - b);
  const result = { name, nsPerOp: samples[0]!, medianNsPerOp: samples[Math.floor(samples.length / 2)]! };
  console.log(
    `${name.padEnd(66)} ${result.nsPerOp.toFixed(0).padStart(6)} ns/op  (median ${result.medianNsPerOp.toFixed(0)})`,
  );
  return result;
}

export function header(title: string): void {
  console.log(`\n${title}\n${'-'.repeat(title.length)}`);
}
