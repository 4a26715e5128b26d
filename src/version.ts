import { createRequire } from 'node:module';

const pkg = createRequire(import.meta.url)('../package.json') as { version: string };

/** The package version, reported by `peregrine --version`, /healthz and `peregrine_build_info`. */
export const VERSION: string = pkg.version;
