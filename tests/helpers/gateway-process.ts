/**
 * A real gateway process: `bin/peregrine.js run --config <file>` (the launcher, its V8 flags and
 * allocator setting), its JSON log lines collected from stdout, ready once it logs
 * `peregrine ready`. For tests that need separate processes (signals, replicas sharing Redis).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { dirname } from 'node:path';

export interface GatewayProcess {
  readonly child: ChildProcess;
  /** The port of the listener named `edge` (0 when there is none, e.g. a sidecar). */
  readonly port: number;
  /** The port of every listener, by name. */
  readonly listeners: Readonly<Record<string, number>>;
  readonly adminPort: number;
  readonly logs: Record<string, unknown>[];
  /** Its exit code (null when killed by a signal). */
  readonly exit: Promise<number | null>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it exited. Safe to call twice. */
  stop(graceMs?: number): Promise<void>;
}

export async function startGatewayProcess(
  configFile: string,
  env: Readonly<Record<string, string>> = {},
): Promise<GatewayProcess> {
  // The launcher's `#!/usr/bin/env -S node …` finds Node on PATH: this Node (24) first.
  const child = spawn('bin/peregrine.js', ['run', '--config', configFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` },
  });
  const logs: Record<string, unknown>[] = [];
  let buf = '';
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = new Promise<{ port: number; adminPort: number; listeners: Record<string, number> }>(
    (resolve, reject) => {
      child.stdout!.on('data', (c: Buffer) => {
        buf += c.toString();
        let i = buf.indexOf('\n');
        while (i >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          i = buf.indexOf('\n');
          if (!line.startsWith('{')) continue;
          const rec = JSON.parse(line) as Record<string, unknown>;
          logs.push(rec);
          if (rec.msg === 'peregrine ready') {
            const listeners = Object.fromEntries(
              Object.entries(rec.listeners as Record<string, string>).map(([n, a]) => [
                n,
                Number(a.split(':').pop()),
              ]),
            );
            resolve({
              port: listeners.edge ?? 0,
              adminPort: Number(String(rec.admin).split(':').pop()),
              listeners,
            });
          }
        }
      });
      void exit.then((code) => reject(new Error(`gateway exited early (${code}): ${stderr}`)));
    },
  );
  const { port, adminPort, listeners } = await ready;
  return {
    child,
    port,
    listeners,
    adminPort,
    logs,
    exit,
    async stop(graceMs = 5000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exit;
      clearTimeout(timer);
    },
  };
}
