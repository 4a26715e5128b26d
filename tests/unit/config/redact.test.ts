import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../../src/config/loader.ts';
import { redact } from '../../../src/config/redact.ts';
import type { Config } from '../../../src/config/schema.ts';

const TEXT = `listeners:
  - name: edge
    address: 0.0.0.0:8080
telemetry:
  tracing:
    endpoint: https://collector:s3cret-pass@otel.example.com:4318/
upstreams:
  users:
    endpoints:
      - http://svc-user:hunter2@10.0.0.5:8080
      - http://10.0.0.6:8080
routes:
  - name: users-api
    upstream: users
    match:
      headers:
        authorization: Bearer abc.def.ghi
        x-api-key: k-123
        cookie: session=c00kie
        x-tenant: acme
`;

describe('redact', () => {
  it('redacts values under secret-looking keys and credentials in URLs, keeps the rest', () => {
    const cfg = parseConfigText(TEXT, 'f.yaml', {});
    const red = redact(cfg) as Config;
    expect(red.routes[0]!.match.headers).toEqual({
      authorization: '[redacted]',
      'x-api-key': '[redacted]',
      cookie: '[redacted]',
      'x-tenant': 'acme',
    });
    expect(red.upstreams['users']!.endpoints).toEqual([
      'http://[redacted]@10.0.0.5:8080',
      'http://10.0.0.6:8080',
    ]);
    expect(red.telemetry.tracing.endpoint).toBe('https://[redacted]@otel.example.com:4318/');
    expect(red.listeners).toEqual(cfg.listeners);
    const json = JSON.stringify(red);
    for (const secret of ['hunter2', 's3cret-pass', 'abc.def.ghi', 'k-123', 'c00kie', 'svc-user']) {
      expect(json).not.toContain(secret);
    }
  });

  it('is a deep copy: the live config is untouched', () => {
    const cfg = parseConfigText(TEXT, 'f.yaml', {});
    const before = structuredClone(cfg);
    const red = redact(cfg) as Config;
    expect(cfg).toEqual(before);
    expect(red.routes).not.toBe(cfg.routes);
    expect(red.upstreams['users']!.endpoints).not.toBe(cfg.upstreams['users']!.endpoints);
  });

  it('is generic: works on sections the schema does not know yet, whole subtrees included', () => {
    const future = {
      auth: {
        jwt: { issuer: 'https://idp', clientSecret: 'cs', signingKey: 'sk', keyId: 'kid-1' },
        basic: { users: [{ name: 'ops', password: 'pw' }] },
        credentials: { user: 'u', pass: 'p' },
        apiToken: 'tok',
        keepAliveTimeout: 5000,
      },
      stores: { redis: { url: 'redis://default:redispw@redis:6379/0' } },
    } as unknown as Config;
    expect(redact(future)).toEqual({
      auth: {
        jwt: { issuer: 'https://idp', clientSecret: '[redacted]', signingKey: '[redacted]', keyId: 'kid-1' },
        basic: { users: [{ name: 'ops', password: '[redacted]' }] },
        credentials: '[redacted]',
        apiToken: '[redacted]',
        keepAliveTimeout: 5000,
      },
      stores: { redis: { url: 'redis://[redacted]@redis:6379/0' } },
    });
  });

  it('shows dates as JSON does', () => {
    expect(redact({ at: new Date(0), uri: 'https://u:p@h/x' })).toEqual({
      at: '1970-01-01T00:00:00.000Z',
      uri: 'https://[redacted]@h/x',
    });
  });
});
