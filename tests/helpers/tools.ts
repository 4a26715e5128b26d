/**
 * The external programs some tests run (a real Prometheus, promtool, a real Redis), found the same
 * way for every test: the tool's `*_BIN` variable, else on PATH, else under .tools/ where
 * `scripts/get-tools.sh` puts Debian's package without root. When none runs, the error says
 * exactly what to do.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '../..');
/** Where scripts/get-tools.sh extracts packages. */
const TOOLS_ROOT = join(ROOT, '.tools/root');

export interface ToolSpec {
  /** The command's name on PATH. */
  readonly command: string;
  /** The variable that names the binary to use instead. */
  readonly envVar: string;
  /** The Debian package that has it (for apt-get and scripts/get-tools.sh). */
  readonly debianPackage: string;
  /** false: a copy extracted into .tools/ does not run (Debian's chromium), so none is looked for. */
  readonly localCopy?: boolean;
}

export const PROMETHEUS: ToolSpec = {
  command: 'prometheus',
  envVar: 'PROMETHEUS_BIN',
  debianPackage: 'prometheus',
};
export const PROMTOOL: ToolSpec = {
  command: 'promtool',
  envVar: 'PROMTOOL_BIN',
  debianPackage: 'prometheus',
};
export const REDIS_SERVER: ToolSpec = {
  command: 'redis-server',
  envVar: 'REDIS_SERVER_BIN',
  debianPackage: 'redis-server',
};
/** In redis-tools, which scripts/get-tools.sh fetches with redis-server. */
export const REDIS_CLI: ToolSpec = {
  command: 'redis-cli',
  envVar: 'REDIS_CLI_BIN',
  debianPackage: 'redis-tools',
};

export const CHROMIUM: ToolSpec = {
  command: 'chromium',
  envVar: 'CHROMIUM_BIN',
  debianPackage: 'chromium',
  localCopy: false,
};

export interface FoundTool {
  /** What to spawn. */
  readonly path: string;
  /** The environment to spawn it with (a copy from .tools/ needs its libraries found). */
  readonly env: NodeJS.ProcessEnv;
  /** Where it was found. */
  readonly source: 'env' | 'PATH' | '.tools';
}

/** Runs `--version` and says why not, or undefined when it ran. */
function tryRun(path: string, env: NodeJS.ProcessEnv): string | undefined {
  const probe = spawnSync(path, ['--version'], { encoding: 'utf8', env, timeout: 10_000 });
  if (probe.error !== undefined) return probe.error.message;
  if (probe.status !== 0)
    return `exit ${probe.status}: ${(probe.stderr || probe.stdout).trim().split('\n')[0]}`;
  return undefined;
}

/** LD_LIBRARY_PATH for the libraries get-tools.sh extracted next to the binaries (multiarch dirs). */
function toolsLibraryPath(toolsRoot: string, inherited: string | undefined): string {
  const dirs: string[] = [];
  for (const base of [join(toolsRoot, 'usr/lib'), join(toolsRoot, 'lib')]) {
    if (!existsSync(base)) continue;
    dirs.push(base);
    for (const d of readdirSync(base)) if (d.endsWith('-linux-gnu')) dirs.push(join(base, d));
  }
  return [...dirs, ...(inherited ? [inherited] : [])].join(':');
}

const found = new Map<string, FoundTool>();

/**
 * The tool `spec`, or an Error naming `neededBy` and the three ways to provide it. Looked up once
 * per test process. `where` replaces the process environment and the .tools/ directory (tests of
 * this function).
 */
export function findTool(
  spec: ToolSpec,
  neededBy: string,
  where?: { env: NodeJS.ProcessEnv; toolsRoot: string },
): FoundTool {
  const cached = where === undefined ? found.get(spec.command) : undefined;
  if (cached !== undefined) return cached;
  const baseEnv = where?.env ?? process.env;
  const toolsRoot = where?.toolsRoot ?? TOOLS_ROOT;
  const tried: string[] = [];
  const fromEnv = baseEnv[spec.envVar];
  let tool: FoundTool | undefined;
  if (fromEnv) {
    const why = tryRun(fromEnv, baseEnv);
    if (why === undefined) tool = { path: fromEnv, env: baseEnv, source: 'env' };
    // A variable that points at something broken is a mistake to report, not to work around.
    else
      throw new Error(`${neededBy} needs ${spec.command}: ${spec.envVar}=${fromEnv} does not run (${why})`);
  } else tried.push(`${spec.envVar} is not set`);
  if (tool === undefined) {
    const why = tryRun(spec.command, baseEnv);
    if (why === undefined) tool = { path: spec.command, env: baseEnv, source: 'PATH' };
    else tried.push(`no working \`${spec.command}\` on PATH (${why})`);
  }
  if (tool === undefined && spec.localCopy !== false) {
    const local = join(toolsRoot, 'usr/bin', spec.command);
    const env = { ...baseEnv, LD_LIBRARY_PATH: toolsLibraryPath(toolsRoot, baseEnv.LD_LIBRARY_PATH) };
    const why = existsSync(local) ? tryRun(local, env) : 'not there';
    if (why === undefined) tool = { path: local, env, source: '.tools' };
    else tried.push(`.tools/root/usr/bin/${spec.command}: ${why}`);
  }
  if (tool === undefined) {
    throw new Error(
      [
        `${neededBy} needs ${spec.command} and found none:`,
        ...tried.map((t) => `  - ${t}`),
        'Do one of:',
        ...(spec.localCopy === false
          ? []
          : [
              `  scripts/get-tools.sh ${spec.debianPackage}      # no root: Debian's package, extracted into .tools/`,
            ]),
        `  sudo apt-get install ${spec.debianPackage}      # Debian/Ubuntu, system-wide`,
        `  ${spec.envVar}=/path/to/${spec.command} npm test`,
      ].join('\n'),
    );
  }
  if (where === undefined) found.set(spec.command, tool);
  return tool;
}
