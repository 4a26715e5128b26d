/**
 * Watch one config file for content changes. The file's directory is watched, not the file:
 * editors save by writing a temp file and renaming it over the original, and Kubernetes swaps a
 * ConfigMap by re-pointing the `..data` symlink; both replace the inode, which a watch on the
 * file itself would silently lose. When the file is a symlink, the directory of its target is
 * watched too (and re-resolved after each change, since ConfigMap targets move).
 *
 * Any event in a watched directory schedules a debounced check that hashes the file and calls
 * `onChange` only if the hash differs from the last one seen. A file that is briefly missing or
 * unreadable (mid-rename) is skipped; the next event or re-arm tries again.
 */
import { createHash } from 'node:crypto';
import { type FSWatcher, readFileSync, realpathSync, watch } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

export interface WatchOptions {
  /** Quiet period after the last filesystem event before the file is checked. Default 200ms. */
  debounceMs?: number;
}

export interface ConfigWatcher {
  /** Stop watching. Safe to call more than once. */
  close(): void;
}

/** If a directory watch fails (directory gone, watcher error), try to re-arm after this long. */
const REARM_MS = 1000;

/**
 * Call `onChange` after the content of `file` changed. `onChange` must not throw: it runs from a
 * timer, so a throw would surface as an uncaught exception (the reload path catches its own).
 */
export function watchConfigFile(file: string, onChange: () => void, opts: WatchOptions = {}): ConfigWatcher {
  const path = resolve(file);
  const debounceMs = opts.debounceMs ?? 200;
  const watchers = new Map<string, FSWatcher>();
  let lastHash = hashSync(path);
  let debounce: NodeJS.Timeout | undefined;
  let rearm: NodeJS.Timeout | undefined;
  let checking = false;
  let checkAgain = false;
  let closed = false;

  function schedule(): void {
    if (closed) return;
    if (debounce) debounce.refresh();
    else {
      debounce = setTimeout(onQuiet, debounceMs);
      debounce.unref();
    }
  }

  function onQuiet(): void {
    debounce = undefined;
    void check();
  }

  async function check(): Promise<void> {
    // One check at a time; events arriving during a check run one more afterwards.
    if (checking) {
      checkAgain = true;
      return;
    }
    checking = true;
    try {
      do {
        checkAgain = false;
        const hash = await hashAsync(path);
        if (closed) return;
        arm();
        if (hash !== undefined && hash !== lastHash) {
          lastHash = hash;
          onChange();
        }
      } while (checkAgain && !closed);
    } finally {
      checking = false;
    }
  }

  /** Watch the file's directory and, for a symlink, its target's directory; drop stale watches. */
  function arm(): void {
    if (closed) return;
    const wanted = new Set([dirname(path)]);
    try {
      wanted.add(dirname(realpathSync(path)));
    } catch {
      // Missing right now (mid-swap); the directory watch will tell us when it is back.
    }
    for (const [dir, w] of watchers) {
      if (!wanted.has(dir)) {
        w.close();
        watchers.delete(dir);
      }
    }
    for (const dir of wanted) {
      if (watchers.has(dir)) continue;
      try {
        const w = watch(dir, { persistent: false }, schedule);
        w.on('error', () => {
          w.close();
          if (watchers.get(dir) === w) watchers.delete(dir);
          scheduleRearm();
        });
        watchers.set(dir, w);
      } catch {
        scheduleRearm();
      }
    }
  }

  function scheduleRearm(): void {
    if (closed || rearm) return;
    rearm = setTimeout(() => {
      rearm = undefined;
      arm();
      // Changes made while no watch was armed would otherwise go unnoticed.
      schedule();
    }, REARM_MS);
    rearm.unref();
  }

  arm();

  return {
    close(): void {
      if (closed) return;
      closed = true;
      clearTimeout(debounce);
      clearTimeout(rearm);
      for (const w of watchers.values()) w.close();
      watchers.clear();
    },
  };
}

function hashSync(path: string): string | undefined {
  try {
    return createHash('sha256').update(readFileSync(path)).digest('hex');
  } catch {
    return undefined;
  }
}

async function hashAsync(path: string): Promise<string | undefined> {
  try {
    return createHash('sha256')
      .update(await readFile(path))
      .digest('hex');
  } catch {
    return undefined;
  }
}
