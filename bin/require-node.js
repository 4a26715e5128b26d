// Node 24 runs the TypeScript sources directly; an older Node stops at the first `.ts` import with
// ERR_UNKNOWN_FILE_EXTENSION, which says nothing about the cause. The launcher checks first.
// Plain JavaScript that any Node since 12 can load.

/** The lowest Node.js major version that runs the sources. */
export const REQUIRED_NODE_MAJOR = 24;

/**
 * One line saying what is wrong and how to run the gateway instead, or undefined when `version`
 * (process.version, `v20.20.2`) is new enough.
 */
export function nodeVersionProblem(version, execPath) {
  const major = Number(/^v?(\d+)\./.exec(version)?.[1]);
  if (major >= REQUIRED_NODE_MAJOR) return undefined;
  return (
    `peregrine: needs Node.js ${REQUIRED_NODE_MAJOR} or later to run its TypeScript sources, ` +
    `but this is Node.js ${version} (${execPath}). ` +
    "Use the project's own Node: `npm start`, `npx peregrine <command>`, " +
    'or put node_modules/.bin first on PATH (after `npm ci`).'
  );
}
