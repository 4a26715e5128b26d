/**
 * The child process of loadConfigApart: load the file it is sent, send back the result, exit.
 * The compile cache (as bin/peregrine.js enables it) makes the loader's modules quick to start.
 */
import module from 'node:module';
import type { LoadMessage, LoadRequest } from './load-apart.ts';

module.enableCompileCache?.();
const { fingerprintOf, ROUTES_PER_MESSAGE } = await import('./load-apart.ts');
const { ConfigError, loadConfigFile } = await import('./loader.ts');

process.once('message', async ({ file, env }: LoadRequest) => {
  const send = (message: LoadMessage): Promise<void> =>
    new Promise((resolve) => process.send?.(message, () => resolve()));
  try {
    const config = await loadConfigFile(file, env);
    const fingerprint = fingerprintOf(config);
    for (let i = 0; i < config.routes.length; i += ROUTES_PER_MESSAGE)
      await send({ kind: 'routes', routes: config.routes.slice(i, i + ROUTES_PER_MESSAGE) });
    await send({ kind: 'loaded', config: { ...config, routes: [] }, fingerprint });
  } catch (err) {
    const issues =
      err instanceof ConfigError
        ? err.issues
        : [{ file, path: '', message: `cannot load the config: ${String(err)}` }];
    await send({ kind: 'invalid', issues });
  }
  process.exit(0);
});
// The gateway went away: nobody needs the answer.
process.once('disconnect', () => process.exit(0));
