/**
 * `peregrine validate <file>`: load the config exactly as `run` would (interpolation included)
 * and report every problem, including the files the gateway would read at start. Exit codes:
 * 0 valid, 2 invalid or unreadable (1 is left to main.ts for usage errors and crashes).
 */
import {
  ConfigError,
  type ConfigIssue,
  type ConfigSource,
  formatIssue,
  loadConfigSource,
  sortIssues,
} from '../config/loader.ts';
import { checkCertificateFiles } from '../dataplane/listener/certificates.ts';

/** Where a subcommand writes. Each call is one line without its trailing newline, like console.log. */
export interface CliOutput {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
}

export const EXIT_OK = 0;
export const EXIT_INVALID_CONFIG = 2;

export async function runValidate(file: string, out: CliOutput): Promise<number> {
  let issues: ConfigIssue[];
  try {
    issues = fileIssues(await loadConfigSource(file));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    issues = err.issues;
  }
  if (issues.length > 0) {
    for (const issue of issues) out.stderr(formatIssue(issue));
    return EXIT_INVALID_CONFIG;
  }
  out.stdout(`ok: ${file}`);
  return EXIT_OK;
}

/**
 * Problems with the files a valid config makes the gateway read at start: each TLS listener's
 * certificate, key and client CA bundle, put through the checks the listener itself runs at start
 * and on reload. Paths resolve from the working directory, as for `run`.
 */
function fileIssues(source: ConfigSource): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  source.config.listeners.forEach((listener, i) => {
    if (listener.tls === undefined) return;
    for (const problem of checkCertificateFiles(listener.tls)) {
      // `certificates.1.key` → ['certificates', 1, 'key'].
      const setting = (problem.setting?.split('.') ?? []).map((k) => (/^\d+$/.test(k) ? Number(k) : k));
      const path = ['listeners', i, 'tls', ...setting];
      issues.push(source.issueAt(path, problem.message));
    }
  });
  return sortIssues(issues);
}
