/**
 * A route's configured path in the normal form requests are compared in, checked by the rules a
 * request path obeys (and a template's own). The config schema runs it, so `peregrine validate`
 * and a reload report every bad path at its line without building a route table; the route
 * compiler runs it again to get the path and template it indexes.
 */
import { normalizePath } from './path-normalize.ts';
import { compileTemplate, type PathTemplate } from './path-template.ts';

export type RoutePathType = 'exact' | 'prefix' | 'template';

export type RoutePath =
  | { readonly path: string; readonly template: PathTemplate | undefined; readonly error?: undefined }
  | { readonly error: string };

export function compileRoutePath(path: string, pathType: RoutePathType): RoutePath {
  const n = normalizePath(path);
  if ('error' in n) return { error: `path ${JSON.stringify(path)} is invalid (${n.error})` };
  if (n.query !== '' || path.includes('#'))
    return { error: `path ${JSON.stringify(path)} must not contain a query or fragment` };
  if (pathType !== 'template') return { path: n.path, template: undefined };
  try {
    return { path: n.path, template: compileTemplate(n.path) };
  } catch (err) {
    return { error: (err as Error).message };
  }
}
