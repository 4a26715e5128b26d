/**
 * The methods a route may match on. A module of its own (re-exported by schema.ts) so that the
 * metric definitions can read it without loading the config schema and, with it, every policy kind.
 */
export const HTTP_METHODS = [
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'DELETE',
  'PATCH',
  'OPTIONS',
  'TRACE',
  'CONNECT',
] as const;
