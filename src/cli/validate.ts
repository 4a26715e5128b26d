/**
 * `peregrine validate <file>`: load the config exactly as `run` would (interpolation included)
 * and report every problem. Exit codes: 0 valid, 2 invalid or unreadable (1 is left to main.ts
 * for usage errors and crashes).
 */
import { ConfigError, formatIssue, loadConfigFile } from '../config/loader.ts';

/** Where a subcommand writes. Each call is one line without its trailing newline, like console.log. */
export interface CliOutput {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
}

export const EXIT_OK = 0;
export const EXIT_INVALID_CONFIG = 2;

export async function runValidate(file: string, out: CliOutput): Promise<number> {
  try {
    await loadConfigFile(file);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const issue of err.issues) out.stderr(formatIssue(issue));
    return EXIT_INVALID_CONFIG;
  }
  out.stdout(`ok: ${file}`);
  return EXIT_OK;
}
