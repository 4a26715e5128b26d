import { describe, expect, it } from 'vitest';
import { editDistance, knownKeys, suggestKey } from '../../../src/config/key-suggestions.ts';

describe('key suggestions', () => {
  it('knows the keys of every section, through arrays, maps by name and unions', () => {
    expect(knownKeys([])).toEqual(expect.arrayContaining(['listeners', 'upstreams', 'routes', 'telemetry']));
    expect(knownKeys(['upstreams', 'users'])).toEqual(
      expect.arrayContaining(['endpoints', 'retries', 'timeouts']),
    );
    expect(knownKeys(['routes', 0, 'match'])).toEqual(expect.arrayContaining(['host', 'path', 'headers']));
    // An endpoint is a URL or an object: the object's keys count.
    expect(knownKeys(['upstreams', 'users', 'endpoints', 0])).toEqual(
      expect.arrayContaining(['url', 'weight']),
    );
    expect(knownKeys(['no', 'such', 'place'])).toEqual([]);
  });

  it('suggests a key a slip away, ignoring letter case, and nothing for an unrelated word', () => {
    expect(suggestKey(['upstreams', 'users'], 'retrys')).toBe('retries');
    expect(suggestKey(['upstreams', 'users'], 'RETRIES')).toBe('retries');
    expect(suggestKey(['upstreams', 'users'], 'timeout')).toBe('timeouts');
    expect(suggestKey(['telemetry', 'tracing'], 'sampleratio')).toBe('sampleRatio');
    expect(suggestKey(['upstreams', 'users'], 'colour')).toBeUndefined();
    expect(suggestKey([], 'xyz')).toBeUndefined();
  });

  it('measures edits', () => {
    expect(editDistance('retrys', 'retries')).toBe(2);
    expect(editDistance('pathh', 'path')).toBe(1);
    expect(editDistance('', 'abc')).toBe(3);
    expect(editDistance('Same', 'same')).toBe(0);
  });
});
