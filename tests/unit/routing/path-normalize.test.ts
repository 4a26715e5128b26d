import { describe, expect, it } from 'vitest';
import { normalizePath } from '../../../src/dataplane/routing/path-normalize.ts';

function path(target: string): string {
  const r = normalizePath(target);
  if ('error' in r) throw new Error(`unexpected error ${r.error} for ${target}`);
  return r.path;
}

function error(target: string): string | undefined {
  const r = normalizePath(target);
  return 'error' in r ? r.error : undefined;
}

describe('normalizePath', () => {
  describe('fast path', () => {
    it.each(['/', '/a', '/a/b/c', '/a/b/', '/users/123/orders', '/a.b/c..d/.e/f.', '/a;x=y/b;c', '/a/...'])(
      'returns %s unchanged',
      (target) => {
        expect(normalizePath(target)).toEqual({ path: target, query: '' });
      },
    );
  });

  describe('query and fragment', () => {
    it('splits the query off verbatim, including its ?', () => {
      expect(normalizePath('/a?b=../..')).toEqual({ path: '/a', query: '?b=../..' });
      expect(normalizePath('/a?x=%2F&y=\\')).toEqual({ path: '/a', query: '?x=%2F&y=\\' });
      expect(normalizePath('/a?')).toEqual({ path: '/a', query: '?' });
      expect(normalizePath('/?x=1')).toEqual({ path: '/', query: '?x=1' });
    });

    it('drops a fragment', () => {
      expect(normalizePath('/a#frag')).toEqual({ path: '/a', query: '' });
      expect(normalizePath('/a?x=1#frag?y')).toEqual({ path: '/a', query: '?x=1' });
      expect(normalizePath('/a/../b#x')).toEqual({ path: '/b', query: '' });
    });

    it('normalises the path but not the query', () => {
      expect(normalizePath('//a/./b/%7e?q=/./%7e')).toEqual({ path: '/a/b/~', query: '?q=/./%7e' });
    });
  });

  describe('dot-segments and slashes', () => {
    it.each([
      ['/a/./b/../c', '/a/c'],
      ['/..', '/'],
      ['/.', '/'],
      ['/../../a', '/a'],
      ['/a/..', '/'],
      ['/a/b/..', '/a/'],
      ['/a/b/.', '/a/b/'],
      ['/a/b/./', '/a/b/'],
      ['//admin', '/admin'],
      ['///a//b///', '/a/b/'],
      ['/a//../b', '/b'],
      ['/pub/%2e%2e/admin', '/admin'],
      ['/pub/%2E%2e/admin', '/admin'],
      ['/pub/.%2e/admin', '/admin'],
      ['/pub/%2e/admin', '/pub/admin'],
      ['/a/..?x', '/'],
    ])('%s → %s', (target, expected) => {
      expect(path(target)).toBe(expected);
    });

    it('keeps ;params of ordinary segments literally', () => {
      expect(path('/a;x=y/b;c')).toBe('/a;x=y/b;c');
      expect(path('/a/;/b')).toBe('/a/;/b');
      expect(path('/a/...;x/b/../c')).toBe('/a/...;x/c');
      expect(path('/a/.x;y/b')).toBe('/a/.x;y/b');
      expect(path('/a/b;..')).toBe('/a/b;..');
    });

    it.each([
      '/pub/..;/admin',
      '/pub/..;x=y/admin',
      '/pub/.;/admin',
      '/pub/.;x',
      '/pub/..;',
      '/pub/%2e%2e;/admin',
      '/pub/.%2E;x/admin',
      '/pub//..;/admin',
      '/pub/a/../..;/admin?q=1',
    ])('rejects %s: a dot-segment with ;parameters (servlet containers resolve it)', (target) => {
      expect(error(target)).toBe('dot-segment-parameters');
    });
  });

  describe('percent-encoding', () => {
    it('decodes unreserved characters', () => {
      expect(path('/%41%42')).toBe('/AB');
      expect(path('/%61%7A%30%39%2D%2E%5F%7E')).toBe('/az09-._~');
      expect(path('/x%2Ey')).toBe('/x.y');
    });

    it('upper-cases other escapes and never decodes them', () => {
      expect(path('/a%3ab')).toBe('/a%3Ab');
      expect(path('/caf%c3%a9')).toBe('/caf%C3%A9');
      expect(path('/a%20b')).toBe('/a%20b');
      expect(path('/%3f%23')).toBe('/%3F%23');
      // No double decoding: %25 stays, so %252F is not an encoded slash.
      expect(path('/a%252Fb')).toBe('/a%252Fb');
    });

    it.each([
      ['/pub/..%2Fadmin', 'encoded-slash'],
      ['/a%2fb', 'encoded-slash'],
      ['/a%2Fb', 'encoded-slash'],
      ['/a%5Cb', 'encoded-backslash'],
      ['/a%5cb', 'encoded-backslash'],
      ['/a%00b', 'encoded-nul'],
      ['/a%', 'invalid-percent-encoding'],
      ['/a%2', 'invalid-percent-encoding'],
      ['/a%2?x', 'invalid-percent-encoding'],
      ['/a%zz', 'invalid-percent-encoding'],
      ['/a%u0041', 'invalid-percent-encoding'],
    ])('%s is rejected (%s)', (target, code) => {
      expect(error(target)).toBe(code);
    });
  });

  describe('rejections', () => {
    it.each([
      ['/a\\b', 'backslash'],
      ['/..\\admin', 'backslash'],
      ['/a\u0000b', 'control-character'],
      ['/a\nb', 'control-character'],
      ['/a\rb', 'control-character'],
      ['/a\tb', 'control-character'],
      ['/a\u007fb', 'control-character'],
    ])('%j is rejected (%s)', (target, code) => {
      expect(error(target)).toBe(code);
    });

    it.each(['', 'http://x/y', 'https://example.com/', 'example.com:443', '*', 'a/b', '?x'])(
      '%j is not origin-form',
      (target) => {
        expect(error(target)).toBe('not-origin-form');
      },
    );
  });

  it('is idempotent', () => {
    for (const t of ['/pub/%2e%2e/admin', '//a/./b/../c/', '/%41/%3a/x', '/a/b/..', '/a/...;x=y/b']) {
      const once = path(t);
      expect(path(once)).toBe(once);
    }
  });
});
