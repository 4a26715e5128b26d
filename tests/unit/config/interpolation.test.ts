import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfigText } from '../../../src/config/loader.ts';

const LISTENER = 'listeners:\n  - name: edge\n    address: 127.0.0.1:8080\n';

function issuesOf(fn: () => unknown): ConfigError['issues'] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.issues;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('environment interpolation', () => {
  it('substitutes a set variable', () => {
    const cfg = parseConfigText(`listeners:\n  - name: edge\n    address: \${ADDR}\n`, 'f.yaml', {
      ADDR: '10.1.2.3:9000',
    });
    expect(cfg.listeners[0]!.address).toBe('10.1.2.3:9000');
  });

  it('substitutes inside a longer value, several times', () => {
    const text = `${LISTENER}upstreams:\n  a:\n    endpoints:\n      - http://\${HOST}:\${PORT}/\n`;
    const cfg = parseConfigText(text, 'f.yaml', { HOST: 'backend', PORT: '3001' });
    expect(cfg.upstreams['a']!.endpoints).toEqual(['http://backend:3001/']);
  });

  it('uses the default when the variable is unset or empty, and the value when set', () => {
    const text = `listeners:\n  - name: edge\n    address: \${ADDR:-0.0.0.0:8080}\n`;
    expect(parseConfigText(text, 'f.yaml', {}).listeners[0]!.address).toBe('0.0.0.0:8080');
    expect(parseConfigText(text, 'f.yaml', { ADDR: '' }).listeners[0]!.address).toBe('0.0.0.0:8080');
    expect(parseConfigText(text, 'f.yaml', { ADDR: '1.2.3.4:1' }).listeners[0]!.address).toBe('1.2.3.4:1');
  });

  it('reports an unset variable without default at its line and key path', () => {
    const text = `${LISTENER}telemetry:\n  serviceName: \${SERVICE_NAME}\n`;
    const issues = issuesOf(() => parseConfigText(text, 'cfg/gw.yaml', {}));
    expect(issues).toEqual([
      {
        file: 'cfg/gw.yaml',
        line: 5,
        column: 16,
        path: 'telemetry.serviceName',
        message: 'environment variable SERVICE_NAME is not set',
      },
    ]);
  });

  it('reports every unset variable, not only the first', () => {
    const text = `${LISTENER}telemetry:\n  serviceName: \${A}\n  logLevel: \${B}\n`;
    const issues = issuesOf(() => parseConfigText(text, 'f.yaml', {}));
    expect(issues.map((i) => [i.line, i.message])).toEqual([
      [5, 'environment variable A is not set'],
      [6, 'environment variable B is not set'],
    ]);
  });

  it('treats $${ as a literal ${', () => {
    const text = `${LISTENER}telemetry:\n  serviceName: "cost $\${AMOUNT} and \${X}"\n`;
    const cfg = parseConfigText(text, 'f.yaml', { X: 'y', AMOUNT: 'must-not-appear' });
    expect(cfg.telemetry.serviceName).toBe(`cost \${AMOUNT} and y`);
  });

  it('reports malformed references', () => {
    const text = `${LISTENER}telemetry:\n  serviceName: \${9LIVES} \${OPEN\n`;
    const messages = issuesOf(() => parseConfigText(text, 'f.yaml', {})).map((i) => i.message);
    expect(messages).toHaveLength(2);
    expect(messages[0]).toMatch(/^invalid reference \$\{9LIVES\}/);
    expect(messages[1]).toMatch(/^unterminated \$\{/);
  });

  it('cannot inject YAML structure through a value', () => {
    const text = `${LISTENER}telemetry:\n  serviceName: \${NAME}\n`;
    const cfg = parseConfigText(text, 'f.yaml', {
      NAME: 'svc\nlogLevel: debug\nadmin: {address: 0.0.0.0:1}',
    });
    expect(cfg.telemetry.serviceName).toBe('svc\nlogLevel: debug\nadmin: {address: 0.0.0.0:1}');
    expect(cfg.telemetry.logLevel).toBe('info');
    expect(cfg.admin.address).toBe('127.0.0.1:9901');
  });

  it('does not turn a substituted flow sequence into a list', () => {
    const text = `${LISTENER}telemetry:\n  tracing:\n    sampleRatio: \${R}\n`;
    const issues = issuesOf(() => parseConfigText(text, 'f.yaml', { R: '[0.5]' }));
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ line: 6, path: 'telemetry.tracing.sampleRatio' });
    expect(issues[0]!.message).toMatch(/expected number, received string/);
  });

  it('does not substitute in keys', () => {
    const text = `${LISTENER}upstreams:\n  \${NAME}:\n    endpoints: ['http://a:1']\n`;
    const issues = issuesOf(() => parseConfigText(text, 'f.yaml', { NAME: 'users' }));
    expect(issues[0]).toMatchObject({ line: 5, path: `upstreams.\${NAME}` });
  });

  it('types a plain substituted value as number or boolean, like YAML would', () => {
    const text = `${LISTENER}telemetry:\n  tracing:\n    sampleRatio: \${RATIO:-0.1}\n  accessLog:\n    enabled: \${AL:-false}\n`;
    let cfg = parseConfigText(text, 'f.yaml', {});
    expect(cfg.telemetry.tracing.sampleRatio).toBe(0.1);
    expect(cfg.telemetry.accessLog.enabled).toBe(false);
    cfg = parseConfigText(text, 'f.yaml', { RATIO: '1', AL: 'true' });
    expect(cfg.telemetry.tracing.sampleRatio).toBe(1);
    expect(cfg.telemetry.accessLog.enabled).toBe(true);
  });

  it('keeps a quoted substituted value a string', () => {
    const text = `${LISTENER}telemetry:\n  tracing:\n    sampleRatio: "\${RATIO:-0.1}"\n`;
    const issues = issuesOf(() => parseConfigText(text, 'f.yaml', {}));
    expect(issues[0]!.message).toMatch(/expected number, received string/);
    const route = `${LISTENER}upstreams:\n  u:\n    endpoints: ['http://a:1']\nroutes:\n  - name: r\n    upstream: u\n    match:\n      headers:\n        x-v: "\${V:-2}"\n`;
    expect(parseConfigText(route, 'f.yaml', {}).routes[0]!.match.headers).toEqual({ 'x-v': '2' });
  });

  it('does not retype strings that only look like other YAML types', () => {
    const text = `${LISTENER}telemetry:\n  serviceName: \${NAME}\n`;
    expect(parseConfigText(text, 'f.yaml', { NAME: 'null' }).telemetry.serviceName).toBe('null');
    expect(parseConfigText(text, 'f.yaml', { NAME: '~' }).telemetry.serviceName).toBe('~');
  });

  it('ignores references in comments', () => {
    const text = `${LISTENER}# exporter: \${NOT_SET}\n`;
    expect(parseConfigText(text, 'f.yaml', {}).listeners).toHaveLength(1);
  });
});
