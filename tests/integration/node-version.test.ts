/**
 * Started with a Node.js older than 24, the launcher says in one line what is wrong and how to run
 * the gateway, instead of Node's ERR_UNKNOWN_FILE_EXTENSION at the first `.ts` import. Run with
 * every such Node this machine has (the system `node` on PATH, /usr/bin/node, ...), through the
 * launcher's #! line as a user would start it; the check itself is tested at any Node.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { nodeVersionProblem, REQUIRED_NODE_MAJOR } from '../../bin/require-node.js';

const ROOT = join(import.meta.dirname, '../..');
const LAUNCHER = join(ROOT, 'bin/peregrine.js');

/** Every `node` on PATH and in the usual system places, with its version, without duplicates. */
function nodesOnThisMachine(): { path: string; version: string; execPath: string }[] {
  const candidates = new Set<string>(['/usr/bin/node', '/usr/local/bin/node', '/bin/node']);
  for (const dir of (process.env.PATH ?? '').split(':')) if (dir) candidates.add(join(dir, 'node'));
  const seen = new Set<string>();
  const out: { path: string; version: string; execPath: string }[] = [];
  for (const path of candidates) {
    if (!existsSync(path)) continue;
    const probe = spawnSync(path, ['-p', 'process.version + " " + process.execPath'], { encoding: 'utf8' });
    if (probe.status !== 0) continue;
    const [version, execPath] = probe.stdout.trim().split(' ');
    if (seen.has(execPath!)) continue;
    seen.add(execPath!);
    out.push({ path, version: version!, execPath: execPath! });
  }
  return out;
}

const major = (version: string) => Number(version.slice(1).split('.')[0]);

describe('the launcher on an old Node.js', () => {
  it('names the problem and the way out in one line, and runs nothing', () => {
    const problem = nodeVersionProblem('v20.20.2', '/usr/bin/node');
    expect(problem).toMatch(
      /^peregrine: needs Node\.js 24 or later .* this is Node\.js v20\.20\.2 \(\/usr\/bin\/node\)\./,
    );
    expect(problem).toContain('npm start');
    expect(problem).not.toContain('\n');
    expect(nodeVersionProblem('v23.11.0', '/x')).toBeDefined();
    expect(nodeVersionProblem(`v${REQUIRED_NODE_MAJOR}.0.0`, '/x')).toBeUndefined();
    expect(nodeVersionProblem(process.version, process.execPath)).toBeUndefined();
  });

  const old = nodesOnThisMachine().filter((n) => major(n.version) < REQUIRED_NODE_MAJOR);

  it.each(old.map((n) => [`${n.path} (${n.version})`, n] as const))(
    'bin/peregrine.js started by %s refuses with that line',
    (_name, node) => {
      // As a shell runs it: the #! line's `env node` finds this Node first on PATH.
      const run = spawnSync(LAUNCHER, ['--version'], {
        encoding: 'utf8',
        env: { ...process.env, PATH: `${dirname(node.path)}:/usr/bin:/bin` },
      });
      expect(run.status).toBe(1);
      expect(run.stdout).toBe('');
      expect(run.stderr).toBe(`${nodeVersionProblem(node.version, node.execPath)}\n`);
      expect(run.stderr).not.toContain('ERR_UNKNOWN_FILE_EXTENSION');
    },
  );

  it("runs on the project's Node", () => {
    const run = spawnSync(LAUNCHER, ['--version'], {
      encoding: 'utf8',
      env: { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH}` },
    });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
  });
});
