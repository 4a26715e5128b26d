import { mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { watchConfigFile } from '../../../src/config/watch.ts';

const DEBOUNCE = 50;
/** Long enough for fs events plus the debounce on a loaded CI machine. */
const QUIET = 600;

/** Counts onChange calls and lets a test await the next one. */
function recorder(): {
  onChange: () => void;
  count: () => number;
  next: (timeoutMs?: number) => Promise<void>;
} {
  let calls = 0;
  const waiters: Array<() => void> = [];
  return {
    onChange() {
      calls++;
      for (const w of waiters.splice(0)) w();
    },
    count: () => calls,
    next(timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no change reported')), timeoutMs);
        waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    },
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('watchConfigFile', () => {
  let dir: string;
  let file: string;
  const closers: Array<() => void> = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'peregrine-watch-'));
    file = join(dir, 'gateway.yaml');
    await writeFile(file, 'version: 1\n');
  });

  afterEach(async () => {
    for (const c of closers.splice(0)) c();
    await rm(dir, { recursive: true, force: true });
  });

  function watchIt(onChange: () => void): void {
    const w = watchConfigFile(file, onChange, { debounceMs: DEBOUNCE });
    closers.push(() => w.close());
  }

  it('fires once after an in-place write', async () => {
    const rec = recorder();
    watchIt(rec.onChange);
    const changed = rec.next();
    await writeFile(file, 'version: 2\n');
    await changed;
    await sleep(QUIET);
    expect(rec.count()).toBe(1);
  });

  it('fires after an atomic rename (write temp, rename over)', async () => {
    const rec = recorder();
    watchIt(rec.onChange);
    const changed = rec.next();
    const tmp = join(dir, '.gateway.yaml.tmp');
    await writeFile(tmp, 'version: 2\n');
    await rename(tmp, file);
    await changed;
    // Still watching after the inode was replaced.
    const again = rec.next();
    await writeFile(tmp, 'version: 3\n');
    await rename(tmp, file);
    await again;
    expect(rec.count()).toBe(2);
  });

  it('follows a Kubernetes-style ..data symlink swap', async () => {
    // dir/gateway.yaml -> ..data/gateway.yaml, ..data -> ..v1; the update re-points ..data to ..v2.
    const k8s = join(dir, 'k8s');
    await mkdir(join(k8s, '..v1'), { recursive: true });
    await mkdir(join(k8s, '..v2'));
    await writeFile(join(k8s, '..v1', 'gateway.yaml'), 'version: 1\n');
    await writeFile(join(k8s, '..v2', 'gateway.yaml'), 'version: 2\n');
    await symlink('..v1', join(k8s, '..data'));
    await symlink(join('..data', 'gateway.yaml'), join(k8s, 'gateway.yaml'));
    file = join(k8s, 'gateway.yaml');
    const rec = recorder();
    watchIt(rec.onChange);
    const changed = rec.next();
    await symlink('..v2', join(k8s, '..data_tmp'));
    await rename(join(k8s, '..data_tmp'), join(k8s, '..data'));
    await changed;
    expect(await readFile(file, 'utf8')).toBe('version: 2\n');
    expect(rec.count()).toBe(1);
  });

  it('does not fire when the content did not change', async () => {
    const rec = recorder();
    watchIt(rec.onChange);
    await writeFile(file, 'version: 1\n');
    const tmp = join(dir, 'tmp');
    await writeFile(tmp, 'version: 1\n');
    await rename(tmp, file);
    // Another file in the same directory changing is not a config change either.
    await writeFile(join(dir, 'other.yaml'), 'x\n');
    await sleep(QUIET);
    expect(rec.count()).toBe(0);
    // Positive control: the watcher is alive and would have reported a change.
    const changed = rec.next();
    await writeFile(file, 'version: 2\n');
    await changed;
    expect(rec.count()).toBe(1);
  });

  it('debounces a burst of writes into one call', async () => {
    const rec = recorder();
    watchIt(rec.onChange);
    const changed = rec.next();
    for (let i = 2; i < 8; i++) await writeFile(file, `version: ${i}\n`);
    await changed;
    await sleep(QUIET);
    expect(rec.count()).toBe(1);
  });

  it('does not fire after close(), and close() is idempotent', async () => {
    const rec = recorder();
    const w = watchConfigFile(file, rec.onChange, { debounceMs: DEBOUNCE });
    w.close();
    w.close();
    await writeFile(file, 'version: 2\n');
    await sleep(QUIET);
    expect(rec.count()).toBe(0);
  });

  it('survives the file being deleted and fires when it comes back changed', async () => {
    const rec = recorder();
    watchIt(rec.onChange);
    await rm(file);
    await sleep(QUIET);
    expect(rec.count()).toBe(0);
    const changed = rec.next();
    await writeFile(file, 'version: 2\n');
    await changed;
    expect(rec.count()).toBe(1);
  });
});
