/**
 * One route compiled from its config: host, path, method and header conditions precomputed into
 * numbers and strings that the per-request checks compare directly, plus the path rewrite.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { HTTP_METHODS, type RouteConfig } from '../../config/schema.ts';
import { matchTemplate, type PathTemplate } from './path-template.ts';
import { compileRoutePath } from './route-path.ts';
import type { CompiledRoute, RouteMatch } from './route-table.ts';

/** A route whose configuration cannot be compiled (e.g. a malformed template). */
export class RouteCompileError extends Error {
  /** Route name. */
  readonly route: string;
  /** Dotted key path into the configuration, e.g. `routes.3.match.path`. */
  readonly keyPath: string;

  constructor(route: string, index: number, message: string) {
    super(`route ${JSON.stringify(route)}: ${message}`);
    this.name = 'RouteCompileError';
    this.route = route;
    this.keyPath = `routes.${index}.match.path`;
  }
}

export const HOST_NONE = 0;
export const HOST_WILDCARD = 1;
export const HOST_EXACT = 2;

// Path kinds double as their precedence rank (higher first).
export const PATH_PREFIX = 0;
export const PATH_TEMPLATE = 1;
export const PATH_EXACT = 2;

const PREFIX_ANY = 0; // `/`: no anchor
const PREFIX_RAW = 1; // `/api/`: anchor `/api`, and the path must go on with `/`
const PREFIX_SEGMENT = 2; // `/api`: the anchor itself

const SLASH = 0x2f;

const METHOD_BITS: ReadonlyMap<string, number> = new Map(HTTP_METHODS.map((m, i) => [m, 1 << i]));
/** Methods outside HTTP_METHODS (WebDAV, custom) match only routes without `methods`. */
const OTHER_METHOD_BIT = 1 << 30;
const ANY_METHOD = 0x7fffffff;

/** The bit RouteImpl.methodMask is tested against. */
export function methodBit(method: string): number {
  return METHOD_BITS.get(method) ?? OTHER_METHOD_BIT;
}

export class RouteImpl implements CompiledRoute {
  readonly name: string;
  readonly upstream: string;
  readonly priority: number;
  readonly httpRoute: string;
  readonly config: RouteConfig;
  readonly preserveHost: boolean;
  readonly hostRewrite: string | undefined;

  /** Position in the configuration. */
  readonly index: number;
  /** Position in precedence order; set once by the table that sorts the routes. */
  rank = 0;
  readonly hostKind: number;
  /** Exact host, or the wildcard suffix with its leading dot (`.example.com`), or ''. */
  readonly host: string;
  readonly pathKind: number;
  /** Configured path in normal form. */
  readonly path: string;
  readonly prefixMode: number;
  readonly template: PathTemplate | undefined;
  /**
   * Literal text that the path, cut at a segment boundary, must equal for this route to match
   * (`''`: any path). See PathIndex.
   */
  readonly anchor: string;
  readonly methodMask: number;
  readonly headerNames: readonly string[] | undefined;
  readonly headerValues: readonly string[];
  /** `methods` counts one, each header one. */
  readonly constraints: number;
  readonly stripPrefix: string | undefined;
  readonly addPrefix: string | undefined;
  /** Shared result for matches without params. */
  readonly plainMatch: RouteMatch;

  constructor(config: RouteConfig, index: number) {
    const shape = shapeOf(config);
    if (typeof shape === 'string') throw new RouteCompileError(config.name, index, shape);
    this.name = config.name;
    this.upstream = config.upstream;
    this.priority = config.priority;
    this.config = config;
    this.preserveHost = config.preserveHost;
    this.hostRewrite = config.rewrite?.host;
    this.index = index;
    this.hostKind = shape.hostKind;
    this.host = shape.host;
    this.pathKind = shape.pathKind;
    this.path = shape.path;
    this.prefixMode = shape.prefixMode;
    this.template = shape.template;
    this.anchor = shape.anchor;
    this.httpRoute = shape.httpRoute;
    this.methodMask = shape.methodMask;
    this.headerNames = shape.headerNames;
    this.headerValues = shape.headerValues;
    this.constraints = shape.constraints;
    this.stripPrefix = shape.stripPrefix;
    this.addPrefix = shape.addPrefix;
    this.plainMatch = Object.freeze({ route: this, params: undefined });
  }

  /** What logs and debug output see: the public fields, not the (self-referencing) internals. */
  toJSON(): { name: string; upstream: string; priority: number; config: RouteConfig } {
    return { name: this.name, upstream: this.upstream, priority: this.priority, config: this.config };
  }

  rewritePath(path: string): string {
    const strip = this.stripPrefix;
    const add = this.addPrefix;
    if (strip === undefined && add === undefined) return path;
    let rest = path;
    if (strip !== undefined && path.startsWith(strip)) {
      if (path.length === strip.length) rest = '';
      else if (path.charCodeAt(strip.length) === SLASH) rest = path.slice(strip.length);
    }
    if (add === undefined) return rest === '' ? '/' : rest;
    if (rest === '') return add;
    return add.endsWith('/') ? add + rest.slice(1) : add + rest;
  }

  /**
   * Path condition for a route that PathIndex returned for `path`, i.e. whose anchor `path` is
   * known to start with, followed by `/` or the end. Template captures go to `captures`.
   */
  matchesPath(path: string, captures: Int32Array): boolean {
    const kind = this.pathKind;
    if (kind === PATH_EXACT) return path.length === this.path.length;
    if (kind === PATH_TEMPLATE) return matchTemplate(this.template!, path, captures);
    // Prefix `/` matches anything and `/api` is its own anchor; `/api/` (anchor `/api`) needs the slash.
    return this.prefixMode !== PREFIX_RAW || path.length > this.anchor.length;
  }

  matchesHeaders(headers: IncomingHttpHeaders): boolean {
    const names = this.headerNames;
    if (names === undefined) return true;
    for (let i = 0; i < names.length; i++)
      if (!headerEquals(headers[names[i]!], this.headerValues[i]!)) return false;
    return true;
  }
}

/** What a route's conditions and rewrite compile to: a function of its config alone. */
type RouteShape = Pick<
  RouteImpl,
  | 'hostKind'
  | 'host'
  | 'pathKind'
  | 'path'
  | 'prefixMode'
  | 'template'
  | 'anchor'
  | 'httpRoute'
  | 'methodMask'
  | 'headerNames'
  | 'headerValues'
  | 'constraints'
  | 'stripPrefix'
  | 'addPrefix'
>;

/**
 * Shapes by route config object. A reload hands the compile the previous load's object for every
 * route whose config did not change (config/load-apart.ts), so a reload that adds one route
 * compiles one path; the tables and their ranks are rebuilt, the shapes are not.
 */
const shapes = new WeakMap<RouteConfig, RouteShape>();

/** The route's shape, or why it cannot be compiled. */
function shapeOf(config: RouteConfig): RouteShape | string {
  const known = shapes.get(config);
  if (known !== undefined) return known;
  const shape = compileShape(config);
  if (typeof shape !== 'string') shapes.set(config, shape);
  return shape;
}

function compileShape(config: RouteConfig): RouteShape | string {
  const match = config.match;
  let host = (match.host ?? '').toLowerCase();
  if (host.endsWith('.')) host = host.slice(0, -1);
  let hostKind: number;
  if (host === '') hostKind = HOST_NONE;
  else if (host.startsWith('*.')) {
    hostKind = HOST_WILDCARD;
    host = host.slice(1);
  } else hostKind = HOST_EXACT;

  const compiled = compileRoutePath(match.path, match.pathType);
  if (compiled.error !== undefined) return compiled.error;
  const path = compiled.path;
  let pathKind: number;
  let prefixMode = PREFIX_SEGMENT;
  let anchor: string;
  if (match.pathType === 'exact') {
    pathKind = PATH_EXACT;
    anchor = path;
  } else if (compiled.template !== undefined) {
    pathKind = PATH_TEMPLATE;
    anchor = compiled.template.anchor;
  } else {
    pathKind = PATH_PREFIX;
    if (path === '/') {
      prefixMode = PREFIX_ANY;
      anchor = '';
    } else if (path.endsWith('/')) {
      prefixMode = PREFIX_RAW;
      anchor = path.slice(0, -1);
    } else {
      anchor = path;
    }
  }

  let mask = 0;
  for (const m of match.methods ?? []) mask |= METHOD_BITS.get(m) ?? 0;
  const headers = Object.entries(match.headers ?? {});
  const strip = config.rewrite?.stripPrefix;
  // `/users/` strips like `/users`; stripping `/` changes nothing.
  const trimmed = strip?.endsWith('/') ? strip.slice(0, -1) : strip;
  return {
    hostKind,
    host,
    pathKind,
    path,
    prefixMode,
    template: compiled.template,
    anchor,
    httpRoute: httpRouteOf(pathKind, path),
    methodMask: match.methods === undefined ? ANY_METHOD : mask,
    headerNames: headers.length === 0 ? undefined : headers.map(([n]) => n.toLowerCase()),
    headerValues: headers.map(([, v]) => v),
    constraints: (match.methods === undefined ? 0 : 1) + headers.length,
    stripPrefix: trimmed === '' ? undefined : trimmed,
    addPrefix: config.rewrite?.addPrefix,
  };
}

/**
 * `http.route` of a route. A prefix is written as the template with the same reach: `/users`
 * matches `/users` and anything below it, as `/users/*` does; `/users/` only what is below it, for
 * which `/users/*` is the nearest template (the two differ on `/users` alone).
 */
function httpRouteOf(kind: number, path: string): string {
  if (kind !== PATH_PREFIX) return path;
  return path.endsWith('/') ? `${path}*` : `${path}/*`;
}

function headerEquals(actual: string | string[] | undefined, expected: string): boolean {
  if (actual === undefined) return false;
  if (typeof actual === 'string') return actual === expected || listElementEquals(actual, expected);
  for (let i = 0; i < actual.length; i++) if (actual[i] === expected) return true;
  return false;
}

const isOws = (c: number): boolean => c === 0x20 || c === 0x09;

/** Node joins repeated header lines with ", ": is `value` one whole element of that list? */
function listElementEquals(field: string, value: string): boolean {
  if (value.length === 0) return false;
  let from = 0;
  for (;;) {
    const at = field.indexOf(value, from);
    if (at === -1) return false;
    let before = at - 1;
    while (before >= 0 && isOws(field.charCodeAt(before))) before--;
    let after = at + value.length;
    while (after < field.length && isOws(field.charCodeAt(after))) after++;
    if (
      (before < 0 || field.charCodeAt(before) === 0x2c) &&
      (after === field.length || field.charCodeAt(after) === 0x2c)
    )
      return true;
    from = at + 1;
  }
}
