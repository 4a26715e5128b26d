import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const gateway = pathToFileURL(join(import.meta.dirname, '../../src/gateway.ts')).href;

describe('node:http through require', () => {
  it("loading the gateway's modules does not load Node's bundled undici", async () => {
    // A fresh process: what the gateway's static imports load, and nothing of vitest's.
    const script = `await import(${JSON.stringify(gateway)});
      process.stdout.write(JSON.stringify(process.moduleLoadList.filter((m) => m.includes('deps/undici'))));`;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], {
      timeout: 30_000,
    });
    expect(JSON.parse(stdout)).toEqual([]);
  }, 40_000);
});
