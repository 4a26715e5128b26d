/**
 * The OTLP/HTTP exporter (otlp-exporter-base) loads `http` with a dynamic `import('http')` when it
 * first sends to an `http:` collector. That builds Node's ESM namespace of `http`, whose getters
 * load Node's bundled undici (fetch, WebSocket): about 2.4 MB of heap, 1.8 MB of external memory
 * and 14 MB of resident memory in a bare process, held for good by a gateway that uses the undici
 * package instead (docs/decisions.md, "Span export"). A resolve hook sends that one import, and
 * only when it comes from the exporter's package, to otlp-http-module.ts, which hands over the
 * exporter's members of `http` loaded with `require`. Every other import resolves as before; if a
 * later exporter imports `http` from elsewhere, the hook no longer matches and the exporter still
 * works, paying the memory again.
 */
import { registerHooks } from 'node:module';

const EXPORTER_PACKAGE = '/@opentelemetry/otlp-exporter-base/';
const HTTP_MODULE = new URL('./otlp-http-module.ts', import.meta.url).href;

let hooked = false;

/** Install the hook (once per process; it stays). */
export function keepBundledUndiciUnloaded(): void {
  if (hooked) return;
  hooked = true;
  registerHooks({
    resolve(specifier, context, nextResolve) {
      if (
        (specifier === 'http' || specifier === 'node:http') &&
        context.parentURL?.includes(EXPORTER_PACKAGE) === true
      ) {
        return { url: HTTP_MODULE, format: 'module-typescript', shortCircuit: true };
      }
      return nextResolve(specifier, context);
    },
  });
}
