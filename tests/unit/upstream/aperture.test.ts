/**
 * The aperture alone: a ring in hash order, the same in every replica; windows that are
 * deterministic per replica, cover the ring together, change by about one endpoint per set change,
 * step over ineligible endpoints, and widen and narrow with load.
 */
import { describe, expect, it } from 'vitest';
import { Aperture, replicaPosition } from '../../../src/dataplane/upstream/aperture.ts';
import type { Endpoint } from '../../../src/dataplane/upstream/endpoint.ts';
import { ApertureSchema } from '../../../src/dataplane/upstream/policy-schema.ts';
import { seededRandom } from './helpers.ts';

/** The aperture reads only ids: plain objects stand in for endpoints (no pools). */
function fakeEndpoints(n: number, from = 0): Endpoint[] {
  return Array.from(
    { length: n },
    (_, i) => ({ id: `http://10.0.${(from + i) >> 8}.${(from + i) & 255}:8080` }) as Endpoint,
  );
}

function shuffled<T>(list: readonly T[], seed: number): T[] {
  const random = seededRandom(seed);
  const out = [...list];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

function aperture(
  cfg: Record<string, unknown> = {},
  replica = replicaPosition(undefined, 'host-a/1'),
): Aperture {
  return new Aperture(ApertureSchema.parse(cfg), replica);
}

function windowOf(
  a: Aperture,
  members: readonly Endpoint[],
  eligible: readonly Endpoint[] = members,
): Endpoint[] {
  a.setMembers(members);
  return [...a.choose(eligible)];
}

const ids = (list: readonly Endpoint[]) => list.map((e) => e.id);

describe('Aperture', () => {
  it('is deterministic per replica: the same window whatever order the set arrives in', () => {
    const members = fakeEndpoints(500);
    const first = windowOf(aperture(), members);
    expect(first).toHaveLength(12);
    for (let seed = 1; seed <= 5; seed++)
      expect(ids(windowOf(aperture(), shuffled(members, seed)))).toEqual(ids(first));
    // Another replica (another host or process) sits elsewhere on the ring.
    const other = windowOf(aperture({}, replicaPosition(undefined, 'host-b/7')), members);
    expect(ids(other)).not.toEqual(ids(first));
  });

  it.each([
    [1000, 3, 12, 1],
    [1000, 200, 12, 3],
    [1000, 10, 100, 1],
    [97, 40, 12, 5],
    [30, 4, 12, 2],
  ])(
    'with replica index/count, %i endpoints over %i replicas (minEndpoints %i): every endpoint in exactly %i windows',
    (n, count, min, c) => {
      const members = fakeEndpoints(n);
      const covered = new Map<string, number>();
      const sizes: number[] = [];
      for (let index = 0; index < count; index++) {
        const w = windowOf(
          aperture({ minEndpoints: min }, replicaPosition({ index, count })),
          shuffled(members, index),
        );
        sizes.push(w.length);
        for (const e of w) covered.set(e.id, (covered.get(e.id) ?? 0) + 1);
      }
      expect(covered.size).toBe(n);
      expect(new Set(covered.values())).toEqual(new Set([c]));
      // Windows are whole shares of the ring: their sizes differ by one at most, none below minEndpoints.
      expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
      expect(Math.min(...sizes)).toBeGreaterThanOrEqual(Math.min(n, min));
    },
  );

  it('without replica settings, many replicas at hashed offsets still reach most of the set', () => {
    const members = fakeEndpoints(1000);
    const covered = new Set<string>();
    for (let r = 0; r < 200; r++)
      for (const e of windowOf(aperture({}, replicaPosition(undefined, `pod-${r}/1`)), members))
        covered.add(e.id);
    // 200 windows of 12 over 1,000: 1 - e^-2.4 ≈ 91% expected.
    expect(covered.size).toBeGreaterThan(850);
  });

  it('uses every endpoint when the set is no larger than the window (the same array)', () => {
    const a = aperture({ minEndpoints: 12 });
    const members = fakeEndpoints(12);
    a.setMembers(members);
    expect(a.choose(members)).toBe(members);
    expect(a.watched).toHaveLength(12);
  });

  it('an endpoint joining or leaving changes the window by at most one in and one out', () => {
    const members = fakeEndpoints(400);
    const a = aperture();
    let before = new Set(ids(windowOf(a, members)));
    let current = members;
    for (let k = 0; k < 50; k++) {
      current =
        k % 2 === 0
          ? [...current, ...fakeEndpoints(1, 1000 + k)]
          : current.filter((_, i) => i !== (k * 37) % current.length);
      const after = new Set(ids(windowOf(a, current)));
      const gone = [...before].filter((id) => !after.has(id));
      const come = [...after].filter((id) => !before.has(id));
      expect(gone.length).toBeLessThanOrEqual(1);
      expect(come.length).toBeLessThanOrEqual(1);
      expect(after.size).toBe(12);
      before = after;
    }
  });

  it('a ring kept up to date change by change is the ring built afresh', () => {
    const kept = aperture({ minEndpoints: 40 });
    let current = fakeEndpoints(300);
    kept.setMembers(current);
    const random = seededRandom(3);
    for (let k = 0; k < 40; k++) {
      const removed = current.filter(() => random() < 0.02);
      const added = fakeEndpoints(1 + Math.floor(random() * 3), 2000 + k * 10);
      current = [...current.filter((e) => !removed.includes(e)), ...added];
      kept.setMembers(current, { added, removed });
      const fresh = aperture({ minEndpoints: 40 });
      fresh.setMembers(shuffled(current, k));
      expect(ids(kept.choose(current))).toEqual(ids(fresh.choose(current)));
      expect(ids(kept.watched)).toEqual(ids(fresh.watched));
    }
  });

  it('steps over ineligible endpoints (the window reaches further) and watches them', () => {
    const members = fakeEndpoints(100);
    const a = aperture();
    const full = windowOf(a, members);
    const down = new Set([full[2]!, full[5]!]);
    const w = windowOf(
      a,
      members,
      members.filter((e) => !down.has(e)),
    );
    expect(w).toHaveLength(12);
    for (const e of down) expect(w).not.toContain(e);
    // The ten that stayed, in the same order, then the two after the old window's end.
    expect(w.slice(0, 10)).toEqual(full.filter((e) => !down.has(e)));
    expect(a.watched).toHaveLength(14);
    for (const e of [...full, ...w]) expect(a.watched).toContain(e);
  });

  it('widens with headroom when attempts in flight pass size × maxLoad, and narrows to the base at most', () => {
    const a = aperture({ minEndpoints: 12, maxLoad: 4 });
    a.setMembers(fakeEndpoints(1000));
    expect(a.size).toBe(12);
    expect(a.grow(40)).toBe(false); // 40 fit in 12 × 4
    expect(a.grow(49)).toBe(true);
    expect(a.size).toBe(Math.ceil((49 * 1.5) / 4)); // 19
    expect(a.grow(50)).toBe(false);
    // A period whose peak still needs 19 keeps it.
    expect(a.shrink(49)).toBe(false);
    expect(a.size).toBe(19);
  });

  it('narrows when a period peak fits in fewer endpoints, never below the base, and never past the set', () => {
    const a = aperture({ minEndpoints: 12, maxLoad: 4 });
    a.setMembers(fakeEndpoints(1000));
    a.grow(400);
    expect(a.size).toBe(150);
    expect(a.shrink(400)).toBe(false);
    expect(a.shrink(100)).toBe(true);
    expect(a.size).toBe(38);
    expect(a.shrink(1)).toBe(true);
    expect(a.size).toBe(12);
    expect(a.shrink(0)).toBe(false);
    const small = aperture({ minEndpoints: 2, maxLoad: 1 });
    small.setMembers(fakeEndpoints(5));
    small.grow(1000);
    expect(small.size).toBe(5);
  });
});
