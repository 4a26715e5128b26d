/**
 * The mesh side of a sidecar listener: the services on either end of each request, with bounded
 * label values (callers past maxPeers share `_other`; identities outside the pattern are
 * `_unknown`; no destination is `_none`), and the span attributes.
 */
import { describe, expect, it } from 'vitest';
import type { RequestContext } from '../../../src/dataplane/context.ts';
import { MeshSide } from '../../../src/sidecar/mesh-telemetry.ts';
import { renderMetrics } from '../../../src/telemetry/metrics.ts';
import { testMetrics } from '../../helpers/registry.ts';
import { metricValue } from '../../helpers/tls-client.ts';

const PATTERN = 'spiffe://prod.example/ns/*/sa/{service}';

function ctx(fields: { identity?: string; cluster?: string }): RequestContext {
  const attributes: Record<string, unknown> = {};
  return {
    identity: fields.identity,
    cluster: fields.cluster === undefined ? undefined : { name: fields.cluster },
    sampled: true,
    traceId: '0af7651916cd43dd8448eb211c80319c',
    span: {
      isRecording: () => true,
      setAttribute: (k: string, v: unknown) => {
        attributes[k] = v;
      },
      attributes,
    },
  } as unknown as RequestContext;
}

describe('MeshSide', () => {
  it('inbound: the caller service from its identity, bounded by maxPeers', async () => {
    const metrics = testMetrics();
    const side = new MeshSide(
      { direction: 'inbound', service: 'orders', identityPattern: PATTERN, maxPeers: 2 },
      metrics.mesh,
    );
    for (const caller of ['web', 'web', 'jobs', 'cron', 'batch'])
      side.record(ctx({ identity: `spiffe://prod.example/ns/shop/sa/${caller}` }), 200, 0.01);
    side.record(ctx({ identity: 'spiffe://prod.example/something/else' }), 403, 0.001);
    side.record(ctx({}), 400, 0.001);
    const { body } = await renderMetrics(metrics, undefined);
    const count = (source: string, status = '200') =>
      metricValue(body, 'peregrine_mesh_requests_total', {
        direction: 'inbound',
        source,
        destination: 'orders',
        status,
      });
    expect(count('web')).toBe(2);
    expect(count('jobs')).toBe(1);
    expect(count('_other')).toBe(2);
    expect(count('cron')).toBeUndefined();
    expect(count('_unknown', '403')).toBe(1);
    expect(count('_none', '400')).toBe(1);
    expect(body).toContain(
      'peregrine_mesh_request_duration_seconds_count{direction="inbound",source="web",destination="orders"} 2',
    );
  });

  it('outbound: the destination its route chose; the span says both ends', async () => {
    const metrics = testMetrics();
    const side = new MeshSide(
      { direction: 'outbound', service: 'web', identityPattern: PATTERN, maxPeers: 1 },
      metrics.mesh,
    );
    const request = ctx({ cluster: 'outbound.orders' });
    side.record(request, 200, 0.02);
    side.record(ctx({ cluster: 'outbound.payments' }), 503, 0.02);
    side.record(ctx({}), 404, 0.001);
    const { body } = await renderMetrics(metrics, undefined);
    const count = (destination: string, status: string) =>
      metricValue(body, 'peregrine_mesh_requests_total', {
        direction: 'outbound',
        source: 'web',
        destination,
        status,
      });
    expect(count('orders', '200')).toBe(1);
    // Destinations are bounded by the configured services, not by maxPeers.
    expect(count('payments', '503')).toBe(1);
    expect(count('_none', '404')).toBe(1);
    expect((request.span as unknown as { attributes: Record<string, unknown> }).attributes).toEqual({
      'peregrine.mesh.direction': 'outbound',
      'peregrine.mesh.source': 'web',
      'peregrine.mesh.destination': 'orders',
    });
  });
});
