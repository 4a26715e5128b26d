/**
 * The child process of ConfigLoader (load-apart.ts): load each file it is sent and send back the
 * result, until the gateway goes away. The compile cache (as bin/peregrine.js enables it) makes
 * the loader's modules quick to start.
 */
import module from 'node:module';
import type { LoadMessage, LoadRequest } from './load-apart.ts';

module.enableCompileCache?.();
const { fingerprintOf, routeText, ROUTES_PER_MESSAGE } = await import('./load-apart.ts');
const { ConfigError, loadConfigFile } = await import('./loader.ts');

const send = (message: LoadMessage): Promise<void> =>
  new Promise((resolve) => process.send?.(message, () => resolve()));

async function load({ id, file, env }: LoadRequest): Promise<void> {
  try {
    const config = await loadConfigFile(file, env);
    const fingerprint = fingerprintOf(config);
    for (let i = 0; i < config.routes.length; i += ROUTES_PER_MESSAGE)
      await send({
        id,
        kind: 'routes',
        routes: config.routes.slice(i, i + ROUTES_PER_MESSAGE).map(routeText),
      });
    await send({ id, kind: 'loaded', config: { ...config, routes: [] }, fingerprint });
  } catch (err) {
    const issues =
      err instanceof ConfigError
        ? err.issues
        : [{ file, path: '', message: `cannot load the config: ${String(err)}` }];
    await send({ id, kind: 'invalid', issues });
  }
}

// One load at a time, in the order asked.
let queue = Promise.resolve();
process.on('message', (request: LoadRequest) => {
  queue = queue.then(async () => {
    await load(request);
    // What a load of 10,000 routes left behind (a few hundred MB) goes back before the wait.
    globalThis.gc?.();
  });
});
// The gateway went away: nobody needs the answer.
process.once('disconnect', () => process.exit(0));
