import { describe, expect, it } from 'vitest';
import { stripCookies, withoutCookies } from '../../../../src/dataplane/filters/jwt/token-cookies.ts';

describe('withoutCookies', () => {
  it('removes the named cookie wherever it is, keeping the others as sent', () => {
    expect(withoutCookies('a=1; tok=x; b=2', ['tok'])).toBe('a=1; b=2');
    expect(withoutCookies('tok=x; a=1; b=2', ['tok'])).toBe('a=1; b=2');
    expect(withoutCookies('a=1; b=2; tok=x', ['tok'])).toBe('a=1; b=2');
  });

  it('returns the very same string when the cookie is not there', () => {
    const header = 'a=1;b=2;  c="3"';
    expect(withoutCookies(header, ['tok'])).toBe(header);
    // The name occurs, but never as a cookie name.
    const inValues = 'a=tok; b=xtok=1; tokens=2';
    expect(withoutCookies(inValues, ['tok'])).toBe(inValues);
  });

  it('matches whole names only: a prefix or suffix of another name is another cookie', () => {
    expect(withoutCookies('tok=1; token=2; xtok=3; tok_=4', ['tok'])).toBe('token=2; xtok=3; tok_=4');
    expect(withoutCookies('tok=1; token=2', ['token'])).toBe('tok=1');
  });

  it('compares names case-sensitively', () => {
    expect(withoutCookies('Tok=1; tok=2', ['tok'])).toBe('Tok=1');
  });

  it('removes every occurrence of a duplicated name', () => {
    expect(withoutCookies('tok=1; a=1; tok=2; b=2; tok=3', ['tok'])).toBe('a=1; b=2');
  });

  it('removes several names at once', () => {
    expect(withoutCookies('a=1; s1=x; b=2; s2=y', ['s1', 's2'])).toBe('a=1; b=2');
  });

  it('keeps values containing = (base64 padding, nested pairs) byte for byte', () => {
    expect(withoutCookies('a=b=c; tok=x.y.z; pad=YWJj==', ['tok'])).toBe('a=b=c; pad=YWJj==');
    expect(withoutCookies('a=tok=x; tok=y', ['tok'])).toBe('a=tok=x');
  });

  it('keeps the separators and spacing of the cookies it keeps', () => {
    expect(withoutCookies('a=1;tok=x;b=2', ['tok'])).toBe('a=1;b=2');
    expect(withoutCookies('a=1 ;  tok=x;   b=2', ['tok'])).toBe('a=1 ;   b=2');
    expect(withoutCookies('  tok=x;  a=1', ['tok'])).toBe('a=1');
  });

  it('tolerates whitespace around a name and tabs', () => {
    expect(withoutCookies('a=1; tok =x; b=2', ['tok'])).toBe('a=1; b=2');
    expect(withoutCookies('a=1;\ttok=x', ['tok'])).toBe('a=1');
  });

  it('drops empty pairs once it rewrites, and keeps pairs without =', () => {
    expect(withoutCookies('a=1;; tok=x;', ['tok'])).toBe('a=1');
    expect(withoutCookies('flag; tok=x', ['tok'])).toBe('flag');
  });

  it('returns undefined when nothing remains', () => {
    expect(withoutCookies('tok=x', ['tok'])).toBeUndefined();
    expect(withoutCookies('tok=x; tok=y;', ['tok'])).toBeUndefined();
    expect(withoutCookies(' tok=', ['tok'])).toBeUndefined();
  });
});

describe('stripCookies', () => {
  it('rewrites each Cookie field and removes the ones left empty, whatever their case', () => {
    const raw = ['Host', 'h', 'Cookie', 'a=1; tok=x', 'x-other', 'tok=y', 'cookie', 'tok=y', 'COOKIE', 'b=2'];
    stripCookies(raw, ['tok']);
    expect(raw).toEqual(['Host', 'h', 'Cookie', 'a=1', 'x-other', 'tok=y', 'COOKIE', 'b=2']);
  });

  it('leaves a list without the cookie untouched', () => {
    const raw = ['host', 'h', 'cookie', 'a=1; b=2'];
    stripCookies(raw, ['tok']);
    expect(raw).toEqual(['host', 'h', 'cookie', 'a=1; b=2']);
  });
});
