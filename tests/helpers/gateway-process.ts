/**
 * A real gateway process: `bin/peregrine.js run --config <file>` (the launcher, its V8 flags and
 * allocator setting), its JSON log lines collected from stdout, ready once it logs
 * `peregrine ready`. For tests that need separate processes (signals, replicas sharing Redis).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { dirname } from 'node:path';

export interface GatewayProcess {
  readonly child: ChildProcess;
  /** The port of the listener named `edge`. */
  readonly port: number;
  readonly adminPort: number;
  readonly logs: Record<string, unknown>[];
  /** Its exit code (null when killed by a signal). */
  readonly exit: Promise<number | null>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it exited. Safe to call twice. */
  stop(graceMs?: number): Promise<void>;
}

export async function startGatewayProcess(configFile: string): Promise<GatewayProcess> {
  // The launcher's `#!/usr/bin/env -S node …` finds Node on PATH: this Node (24) first.
  const child = spawn('bin/peregrine.js', ['run', '--config', configFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` },
  });
  const logs: Record<string, unknown>[] = [];
  let buf = '';
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = new Promise<{ port: number; adminPort: number }>((resolve, reject) => {
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
          const listeners = rec.listeners as Record<string, string>;
          resolve({
            port: Number(listeners.edge!.split(':').pop()),
            adminPort: Number(String(rec.admin).split(':').pop()),
          });
        }
      }
    });
    void exit.then((code) => reject(new Error(`gateway exited early (${code}): ${stderr}`)));
  });
  const { port, adminPort } = await ready;
  return {
    child,
    port,
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
