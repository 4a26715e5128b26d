import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const gateway = pathToFileURL(join(import.meta.dirname, '../../src/gateway.ts')).href;

describe('libraries a configuration may not need are loaded on first use', () => {
  it("loading the gateway's modules loads neither ioredis nor rate-limiter-flexible", async () => {
    // A fresh process: what the gateway's static imports load, and nothing of vitest's.
    const script = `import { createRequire } from 'node:module';
      await import(${JSON.stringify(gateway)});
      const loaded = Object.keys(createRequire(import.meta.url).cache);
      const pick = (lib) => loaded.filter((f) => f.includes('/node_modules/' + lib + '/')).length;
      process.stdout.write(JSON.stringify({ any: loaded.length, ioredis: pick('ioredis'), flexible: pick('rate-limiter-flexible'), undici: pick('undici') }));`;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], {
      timeout: 30_000,
    });
    const counts = JSON.parse(stdout) as Record<string, number>;
    // The probe sees CommonJS packages the gateway does load (undici), so a zero below means something.
    expect(counts.undici).toBeGreaterThan(0);
    expect(counts.ioredis).toBe(0);
    expect(counts.flexible).toBe(0);
  }, 40_000);
});
