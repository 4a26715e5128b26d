import { describe, expect, it } from 'vitest';
import { switchesNote } from '../../../bench/lib/mesh-cpu.ts';
import { parseSwitches, switchesPerRequest, threadSwitches } from '../../../bench/lib/switches.ts';

describe('context switches from /proc', () => {
  it('reads both counters of a status file and takes them per request', () => {
    const status = 'Name:\tnode\nvoluntary_ctxt_switches:\t1200\nnonvoluntary_ctxt_switches:\t35\n';
    const before = parseSwitches(status);
    expect(before).toEqual({ voluntary: 1200, involuntary: 35 });
    expect(switchesPerRequest(before, { voluntary: 1500, involuntary: 45 }, 1000)).toEqual({
      voluntary: 0.3,
      involuntary: 0.01,
    });
  });

  it("reads this process's main thread", () => {
    const s = threadSwitches(process.pid);
    expect(Number.isInteger(s.voluntary) && Number.isInteger(s.involuntary)).toBe(true);
  });

  it('names each process in the mesh report, the absent ones left out', () => {
    const note = switchesNote({
      passthrough: { voluntary: 0.2, involuntary: 0.05 },
      outbound: { voluntary: 0.25, involuntary: 0.1 },
      inbound: { voluntary: 0.3, involuntary: 0.15 },
    });
    expect(note).toBe(
      'main-thread sleeps per request (voluntary switches) passthrough 0.200, outbound 0.250, inbound 0.300; ' +
        'preempted (involuntary) passthrough 0.050, outbound 0.100, inbound 0.150.',
    );
  });
});
