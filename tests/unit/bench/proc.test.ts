import { describe, expect, it } from 'vitest';
import { spawnManaged } from '../../../bench/lib/proc.ts';

describe('bench processes (bench/lib/proc.ts)', () => {
  it('closed: the exit status and everything the process printed as it exited, every time', async () => {
    // A result printed in the last moment before exit, as wrk prints its own: on `exited` alone
    // the pipe's last data can still be unread.
    const script = "process.stdout.write('x'.repeat(6000) + 'Requests/sec: 1\\n'); process.exit(3)";
    for (let i = 0; i < 20; i++) {
      const proc = spawnManaged('printer', process.execPath, ['-e', script]);
      const exit = await proc.closed;
      expect(exit.code).toBe(3);
      expect(proc.exit?.code).toBe(3);
      expect(proc.output().endsWith('Requests/sec: 1\n')).toBe(true);
      expect(proc.output()).toHaveLength(6000 + 'Requests/sec: 1\n'.length);
    }
  });
});
