/**
 * What a sidecar adds to a request's telemetry: the direction it took through the sidecar and
 * the services on either end, as metrics (peregrine_mesh_*) and on the SERVER span. The local
 * service is one end; the other is the destination (outbound: the service its route chose) or the
 * caller (inbound: the service its verified SPIFFE ID names by the mesh's identity pattern).
 *
 * Built once per listener; per request it costs a Map lookup by the peer's upstream or identity,
 * a counter increment and a histogram observation. Label values are bounded: destinations by the
 * configured services, callers by `maxPeers` (then `_other`).
 */
import type { RequestContext } from '../dataplane/context.ts';
import {
  MESH_NO_PEER,
  MESH_UNKNOWN_PEER,
  type MeshDirection,
  type MeshMetrics,
  type MeshPeerSeries,
  OTHER_SERVICE,
} from '../telemetry/metrics.ts';
import { serviceOfIdentity } from '../tls/spiffe.ts';
import { serviceOfOutboundUpstream } from './derive.ts';

/** Distinct caller identities remembered per listener; past it a caller's service is parsed each time. */
const IDENTITY_CACHE_LIMIT = 4096;

export interface MeshSideOptions {
  readonly direction: MeshDirection;
  /** The local service. */
  readonly service: string;
  /** The mesh's identity pattern, `{service}` in the place of the service. */
  readonly identityPattern: string;
  /** Caller services with series of their own; more share `_other`. */
  readonly maxPeers: number;
}

/** One side (listener) of a sidecar. */
export class MeshSide {
  readonly direction: MeshDirection;
  readonly service: string;
  readonly #metrics: MeshMetrics;
  readonly #pattern: string;
  readonly #maxPeers: number;
  /** Peer service → its series. */
  readonly #byPeer = new Map<string, MeshPeerSeries>();
  /** Upstream name (outbound) or caller identity (inbound) → the peer's series. */
  readonly #byKey = new Map<string, MeshPeerSeries>();
  readonly #none: MeshPeerSeries;
  /** Peers with a label of their own. */
  #labelled = 0;

  constructor(opts: MeshSideOptions, metrics: MeshMetrics) {
    this.direction = opts.direction;
    this.service = opts.service;
    this.#metrics = metrics;
    this.#pattern = opts.identityPattern;
    this.#maxPeers = opts.maxPeers;
    this.#none = this.#series(MESH_NO_PEER);
  }

  /** One finished request: its series, and the span's mesh attributes when it is recorded. */
  record(ctx: RequestContext, status: number, seconds: number): void {
    const series = this.#seriesOf(ctx);
    this.#metrics.record(series, status, seconds, ctx.sampled ? ctx.traceId : undefined);
    const span = ctx.span;
    if (span?.isRecording()) {
      span.setAttribute('peregrine.mesh.direction', this.direction);
      span.setAttribute('peregrine.mesh.source', series.labels.source!);
      span.setAttribute('peregrine.mesh.destination', series.labels.destination!);
    }
  }

  #seriesOf(ctx: RequestContext): MeshPeerSeries {
    const key = this.direction === 'outbound' ? ctx.cluster?.name : ctx.identity;
    if (key === undefined) return this.#none;
    const cached = this.#byKey.get(key);
    if (cached !== undefined) return cached;
    const peer =
      this.direction === 'outbound'
        ? (serviceOfOutboundUpstream(key) ?? MESH_NO_PEER)
        : (serviceOfIdentity(this.#pattern, key) ?? MESH_UNKNOWN_PEER);
    const series = this.#series(peer);
    if (this.#byKey.size < IDENTITY_CACHE_LIMIT) this.#byKey.set(key, series);
    return series;
  }

  #series(peer: string): MeshPeerSeries {
    const known = this.#byPeer.get(peer);
    if (known !== undefined) return known;
    // Outbound peers are bounded by the config; callers by maxPeers (the markers aside).
    const marker = peer === MESH_NO_PEER || peer === MESH_UNKNOWN_PEER || peer === OTHER_SERVICE;
    if (this.direction === 'inbound' && !marker && this.#labelled >= this.#maxPeers)
      return this.#series(OTHER_SERVICE);
    if (!marker) this.#labelled++;
    const series =
      this.direction === 'inbound'
        ? this.#metrics.peerSeries('inbound', peer, this.service)
        : this.#metrics.peerSeries('outbound', this.service, peer);
    this.#byPeer.set(peer, series);
    return series;
  }
}
