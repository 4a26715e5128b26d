/**
 * The child process of loadConfigApart: load the file it is sent, send back the result, exit.
 * The compile cache (as bin/peregrine.js enables it) makes the loader's modules quick to start.
 */
import module from 'node:module';
import type { LoadMessage, LoadRequest } from './load-apart.ts';

module.enableCompileCache?.();
const { fingerprintOf } = await import('./load-apart.ts');
const { ConfigError, loadConfigFile } = await import('./loader.ts');

process.once('message', async ({ file, env }: LoadRequest) => {
  let message: LoadMessage;
  try {
    const config = await loadConfigFile(file, env);
    message = { ok: true, config, fingerprint: fingerprintOf(config) };
  } catch (err) {
    message = {
      ok: false,
      issues:
        err instanceof ConfigError
          ? err.issues
          : [{ file, path: '', message: `cannot load the config: ${String(err)}` }],
    };
  }
  process.send?.(message, () => process.exit(0));
});
// The gateway went away: nobody needs the answer.
process.once('disconnect', () => process.exit(0));
