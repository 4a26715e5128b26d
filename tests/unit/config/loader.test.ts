import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  ConfigError,
  type ConfigIssue,
  formatIssue,
  loadConfigFile,
  parseConfigText,
} from '../../../src/config/loader.ts';

/** A valid config; tests break it in one place. Lines are found by content, not counted by hand. */
const VALID = `listeners:
  - name: edge
    address: 0.0.0.0:8080
upstreams:
  users:
    endpoints:
      - http://10.0.0.5:8080
    timeouts:
      connect: 2s
routes:
  - name: users-api
    match:
      path: /api/users
      methods: [GET]
    upstream: users
    priority: 10
`;

function lineOf(text: string, needle: string): number {
  const lines = text.split('\n');
  const i = lines.findIndex((l) => l.includes(needle));
  if (i < 0 || lines.findIndex((l, j) => j > i && l.includes(needle)) >= 0)
    throw new Error(`ambiguous ${needle}`);
  return i + 1;
}

function issuesOf(text: string, file = 'config/gateway.yaml'): ConfigIssue[] {
  try {
    parseConfigText(text, file, {});
  } catch (err) {
    if (err instanceof ConfigError) return err.issues;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('parseConfigText', () => {
  it('accepts the valid base config and applies defaults', () => {
    const cfg = parseConfigText(VALID, 'f.yaml', {});
    expect(cfg.upstreams['users']!.timeouts).toEqual({
      connect: 2000,
      response: 15000,
      idle: 30000,
      request: 30000,
    });
    expect(cfg.routes[0]!.priority).toBe(10);
    expect(cfg.admin.address).toBe('127.0.0.1:9901');
  });

  it('reports a wrong type deep in routes at its line and key path', () => {
    const text = VALID.replace('priority: 10', 'priority: high');
    expect(issuesOf(text)).toEqual([
      {
        file: 'config/gateway.yaml',
        line: lineOf(text, 'priority: high'),
        column: 5,
        path: 'routes.0.priority',
        message: 'Invalid input: expected number, received string',
      },
    ]);
  });

  it('reports a bad enum value inside a list', () => {
    const text = VALID.replace('methods: [GET]', 'methods: [GET, FETCH]');
    const [issue, ...rest] = issuesOf(text);
    expect(rest).toEqual([]);
    expect(issue).toMatchObject({ line: lineOf(text, 'FETCH'), path: 'routes.0.match.methods.1' });
    expect(issue!.message).toMatch(/expected one of "GET"/);
  });

  it('reports an unknown key at the key (strict objects)', () => {
    const text = VALID.replace('      connect: 2s\n', '      connect: 2s\n      conect: 3s\n');
    expect(issuesOf(text)).toEqual([
      {
        file: 'config/gateway.yaml',
        line: lineOf(text, 'conect'),
        column: 7,
        path: 'upstreams.users.timeouts.conect',
        message: 'unknown key "conect"; did you mean "connect"?',
      },
    ]);
  });

  it('reports each unknown key of one mapping separately', () => {
    const text = VALID.replace('    priority: 10\n', '    priority: 10\n    weight: 1\n    retries: 2\n');
    expect(issuesOf(text).map((i) => [i.line, i.path])).toEqual([
      [lineOf(text, 'weight'), 'routes.0.weight'],
      [lineOf(text, 'retries'), 'routes.0.retries'],
    ]);
  });

  it('reports a missing required key at the mapping that lacks it', () => {
    const text = VALID.replace('    upstream: users\n', '');
    expect(issuesOf(text)).toEqual([
      {
        file: 'config/gateway.yaml',
        line: lineOf(text, '- name: users-api'),
        column: 5,
        path: 'routes.0.upstream',
        message: 'required key is missing',
      },
    ]);
  });

  it('reports a missing top-level section at the document', () => {
    const text = VALID.slice(VALID.indexOf('upstreams:'));
    expect(issuesOf(text)).toEqual([
      {
        file: 'config/gateway.yaml',
        line: 1,
        column: 1,
        path: 'listeners',
        message: 'required key is missing',
      },
    ]);
  });

  it('reports an unknown upstream reference at the route', () => {
    const text = VALID.replace('upstream: users', 'upstream: nope');
    expect(issuesOf(text)).toEqual([
      {
        file: 'config/gateway.yaml',
        line: lineOf(text, 'upstream: nope'),
        column: 5,
        path: 'routes.0.upstream',
        message: 'unknown upstream "nope"',
      },
    ]);
  });

  it('reports a bad duration', () => {
    const text = VALID.replace('connect: 2s', 'connect: 2 seconds');
    expect(issuesOf(text)).toEqual([
      {
        file: 'config/gateway.yaml',
        line: lineOf(text, '2 seconds'),
        column: 7,
        path: 'upstreams.users.timeouts.connect',
        message: 'invalid duration "2 seconds" (use e.g. 500ms, 2s, 1m)',
      },
    ]);
  });

  it('reports a bad address once (no cascading port message)', () => {
    const text = VALID.replace('address: 0.0.0.0:8080', 'address: localhost');
    const issues = issuesOf(text);
    expect(issues.map((i) => i.message)).toEqual(['expected host:port, e.g. 0.0.0.0:8080']);
    expect(issuesOf(VALID.replace('0.0.0.0:8080', '0.0.0.0:70000')).map((i) => i.message)).toEqual([
      'port out of range',
    ]);
  });

  it('reports a YAML syntax error with line and column, and stops there', () => {
    const text = VALID.replace('methods: [GET]', 'methods: [GET\n    upstreamx: 1');
    const issues = issuesOf(text);
    // The parser notices the unclosed `[` where the next line starts; follow-on errors come after.
    expect(issues[0]).toMatchObject({ line: lineOf(text, 'upstreamx'), path: 'routes.0' });
    expect(issues[0]!.column).toBeGreaterThan(0);
    expect(issues[0]!.message).toMatch(/end with a \]/);
    for (const i of issues) expect(i.line).toBeGreaterThanOrEqual(lineOf(text, 'upstreamx'));
    // Schema validation does not run on a broken document.
    expect(issues.some((i) => i.message.includes('unknown key'))).toBe(false);
  });

  it('reports a tab-indented line as a syntax error at that line', () => {
    const text = 'listeners:\n  - name: edge\n\taddress: 0.0.0.0:8080\n';
    const issues = issuesOf(text);
    expect(issues).toEqual([
      expect.objectContaining({
        file: 'config/gateway.yaml',
        line: 3,
        column: 1,
        message: expect.stringMatching(/tab/i),
      }),
    ]);
  });

  it('reports a duplicate key at the second occurrence with its path', () => {
    const text = VALID.replace('    priority: 10\n', '    priority: 10\n    priority: 20\n');
    expect(issuesOf(text)).toEqual([
      {
        file: 'config/gateway.yaml',
        line: lineOf(text, 'priority: 20'),
        column: 5,
        path: 'routes.0.priority',
        message: 'duplicate key "priority"',
      },
    ]);
  });

  it('reports every problem, sorted by line, in one pass', () => {
    const text = VALID.replace('address: 0.0.0.0:8080', 'address: 0.0.0.0:99999')
      .replace('connect: 2s', 'connect: soon')
      .replace('upstream: users', 'upstream: nope')
      .replace('priority: 10', 'priority: 1.5');
    const issues = issuesOf(text);
    expect(issues.map((i) => `${i.line} ${i.path}`)).toEqual([
      `${lineOf(text, '99999')} listeners.0.address`,
      `${lineOf(text, 'soon')} upstreams.users.timeouts.connect`,
      `${lineOf(text, 'nope')} routes.0.upstream`,
      `${lineOf(text, '1.5')} routes.0.priority`,
    ]);
  });

  it('reports duplicate listener and route names', () => {
    const text = `${VALID.replace('upstreams:', '  - name: edge\n    address: 0.0.0.0:8081\nupstreams:')}  - name: users-api\n    upstream: users\n`;
    expect(issuesOf(text)).toEqual([
      expect.objectContaining({
        line: lineOf(text, '8081') - 1,
        path: 'listeners.1.name',
        message: 'duplicate listener edge',
      }),
      expect.objectContaining({
        line: text.split('\n').length - 2,
        path: 'routes.1.name',
        message: 'duplicate route users-api',
      }),
    ]);
  });

  it('reports a route whose upstream is missing because there is no upstreams section', () => {
    const text = VALID.slice(0, VALID.indexOf('upstreams:')) + VALID.slice(VALID.indexOf('routes:'));
    expect(issuesOf(text)).toEqual([
      expect.objectContaining({ line: lineOf(text, 'upstream: users'), message: 'unknown upstream "users"' }),
    ]);
  });

  it('reports an empty document', () => {
    expect(issuesOf('# nothing\n')).toEqual([
      { file: 'config/gateway.yaml', path: '', message: 'config is empty' },
    ]);
  });

  it('ConfigError.message is the formatted issue list', () => {
    const text = VALID.replace('upstream: users', 'upstream: nope');
    try {
      parseConfigText(text, 'config/gateway.yaml', {});
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toBe(
        `config/gateway.yaml:${lineOf(text, 'nope')} routes.0.upstream: unknown upstream "nope"`,
      );
    }
  });
});

describe('formatIssue', () => {
  it('formats file:line path: message', () => {
    expect(
      formatIssue({ file: 'config/gateway.yaml', line: 12, path: 'routes.0.upstream', message: 'x' }),
    ).toBe('config/gateway.yaml:12 routes.0.upstream: x');
  });

  it('omits an unknown line and names the root', () => {
    expect(formatIssue({ file: 'a.yaml', path: '', message: 'config is empty' })).toBe(
      'a.yaml (root): config is empty',
    );
  });
});

describe('loadConfigFile', () => {
  it('reads and parses a file, with the given environment', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'peregrine-load-'));
    try {
      const file = join(dir, 'gw.yaml');
      await writeFile(file, VALID.replace('0.0.0.0:8080', `\${ADDR}`));
      const cfg = await loadConfigFile(file, { ADDR: '127.0.0.1:1234' });
      expect(cfg.listeners[0]!.address).toBe('127.0.0.1:1234');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('throws a ConfigError for an unreadable file', async () => {
    const file = join(tmpdir(), 'peregrine-does-not-exist', 'gw.yaml');
    const err = await loadConfigFile(file, {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).issues).toEqual([
      { file, path: '', message: 'cannot read config file (ENOENT)' },
    ]);
  });
});

describe('route compilation during validation', () => {
  it('reports a malformed path template at its line, as validate would', () => {
    const text = VALID.replace('path: /api/users', 'path: /api/:/users\n      pathType: template');
    const issues = issuesOf(text);
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({
      path: 'routes.0.match.path',
      line: lineOf(text, 'path: /api/:/users'),
    });
    expect(issues[0]!.message).toContain('invalid parameter name');
  });
});
