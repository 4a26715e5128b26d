import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ConfigSchema, UpstreamSchema } from '../../../src/config/schema.ts';

describe('UpstreamSchema resilience keys', () => {
  it('applies the documented defaults', () => {
    const u = UpstreamSchema.parse({ endpoints: ['http://a:1'] });
    expect(u.balancer).toEqual({
      kind: 'peak_ewma',
      panicThreshold: 50,
      decay: 10_000,
      defaultRtt: 30,
      aperture: { enabled: true, minEndpoints: 12, maxLoad: 4 },
    });
    expect(u.retries).toEqual({
      maxAttempts: 2,
      retryOn: ['connect-failure', 'refused', 'reset'],
      statuses: [],
      backoff: { base: 25, max: 250 },
      maxRetryAfter: 3000,
      bufferBody: 64 * 1024,
      budget: { ratio: 0.2, minRetriesPerSecond: 3, window: 10_000 },
    });
    expect(u.circuitBreaker).toEqual({
      enabled: true,
      consecutiveFailures: 5,
      failureRatio: 0.5,
      minimumRequests: 20,
      window: 10_000,
      openDuration: 5000,
      maxOpenDuration: 60_000,
      halfOpenProbes: 1,
      failureStatuses: [502, 503, 504],
    });
    expect(u.outlierDetection).toEqual({
      enabled: true,
      consecutiveGatewayErrors: 5,
      consecutive5xx: 0,
      baseEjectionTime: 30_000,
      maxEjectionTime: 300_000,
      maxEjectionPercent: 50,
    });
    expect(u.bulkhead).toEqual({ maxConcurrent: 0, maxQueued: 0, queueTimeout: 1000 });
    expect(u.healthCheck).toBeUndefined();
  });

  it('fills health-check defaults once the section is present', () => {
    const u = UpstreamSchema.parse({ endpoints: ['http://a:1'], healthCheck: {} });
    expect(u.healthCheck).toEqual({
      path: '/healthz',
      interval: 10_000,
      idleInterval: 60_000,
      idleChecksPerSecond: 10,
      timeout: 1000,
      healthyThreshold: 2,
      unhealthyThreshold: 3,
      expectedStatuses: ['200-399'],
      jitter: 0.1,
    });
  });

  it('takes endpoints as URL strings or { url, weight }, and keeps them as written', () => {
    const u = UpstreamSchema.parse({
      endpoints: ['http://a:1', { url: 'http://b:2', weight: 3 }, { url: 'http://c:3' }],
    });
    expect(u.endpoints).toEqual([
      'http://a:1',
      { url: 'http://b:2', weight: 3 },
      { url: 'http://c:3', weight: 1 },
    ]);
  });

  it.each([
    [{ endpoints: ['ftp://a'] }, ['endpoints', 0], 'expected an http:// or https:// URL'],
    [{ endpoints: [{ url: 'http://a', weight: 0 }] }, ['endpoints', 0, 'weight'], 'Too small'],
    [{ endpoints: [5] }, ['endpoints', 0], 'expected an endpoint URL or { url, weight, zone, metadata }'],
    [
      { endpoints: ['http://a:1', { url: 'http://a:1/x' }] },
      ['endpoints', 1],
      'duplicate endpoint http://a:1',
    ],
    [{ endpoints: ['http://a'], balancer: { kind: 'consistent_hash' } }, ['balancer', 'hashOn'], ''],
    [{ endpoints: ['http://a'], balancer: { kind: 'fastest' } }, ['balancer', 'kind'], ''],
    [
      { endpoints: ['http://a'], balancer: { kind: 'round_robin', decay: '1s' } },
      ['balancer'],
      'Unrecognized key',
    ],
    [{ endpoints: ['http://a'], retries: { retryOn: ['5xx'] } }, ['retries', 'retryOn', 0], ''],
    [{ endpoints: ['http://a'], retries: { maxAttempts: 0 } }, ['retries', 'maxAttempts'], ''],
    [
      { endpoints: ['http://a'], healthCheck: { expectedStatuses: ['299-200'] } },
      ['healthCheck', 'expectedStatuses', 0],
      'range is reversed',
    ],
    [
      { endpoints: ['http://a'], circuitBreaker: { failureRatio: 2 } },
      ['circuitBreaker', 'failureRatio'],
      '',
    ],
  ])('rejects %j at its path', (input, path, message) => {
    const r = UpstreamSchema.safeParse(input);
    expect(r.success).toBe(false);
    const issue = r.error!.issues.find((i) => JSON.stringify(i.path) === JSON.stringify(path));
    expect(issue, JSON.stringify(r.error!.issues)).toBeDefined();
    expect(issue!.message).toContain(message);
  });

  it('accepts each balancer kind with its own keys', () => {
    const kinds = [
      { kind: 'round_robin' },
      { kind: 'least_request', panicThreshold: 0 },
      { kind: 'peak_ewma', decay: '5s', defaultRtt: '10ms' },
      { kind: 'consistent_hash', hashOn: { source: 'cookie', name: 'sid' } },
      { kind: 'consistent_hash', hashOn: { source: 'client_address' } },
    ];
    for (const balancer of kinds)
      expect(UpstreamSchema.safeParse({ endpoints: ['http://a'], balancer }).success).toBe(true);
  });

  it('requires exactly one of endpoints and discovery in the JSON Schema, nothing else', () => {
    const schema = z.toJSONSchema(ConfigSchema, { io: 'input', unrepresentable: 'any' }) as unknown as {
      properties: { upstreams: { additionalProperties: { required?: string[]; oneOf: unknown } } };
    };
    const upstream = schema.properties.upstreams.additionalProperties;
    expect(upstream.required).toBeUndefined();
    expect(upstream.oneOf).toEqual([{ required: ['endpoints'] }, { required: ['discovery'] }]);
  });
});
