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
import { readTokenRef, SecretLoadError, type SecretRef } from '../config/secret-ref.ts';
import { Credentials } from '../registry/credentials.ts';
import { checkRedisTlsFiles } from '../stores/redis-connect-options.ts';
import { checkCertificateFiles } from '../tls/listener-certificates.ts';
import type { CertificateLoadError } from '../tls/pem.ts';
import { UpstreamTlsSchema } from '../tls/schema.ts';
import { checkUpstreamTlsFiles } from '../tls/upstream-tls.ts';

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
 * certificate, key and client CA bundle (the admin port's and the registration API's too) and each
 * upstream's CA bundle and client certificate, put through the checks the gateway itself runs at
 * load and on reload; and the admin and registry tokens and the Redis password (files and variables), CA bundle and client certificate. A sidecar's files
 * are its identity's (its derived listeners and upstreams all use them) and its registry token.
 * Paths resolve from the working directory, as for `run`.
 */
function fileIssues(source: ConfigSource): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const report = (problems: readonly CertificateLoadError[], at: (string | number)[]): void => {
    for (const problem of problems) {
      // `certificates.1.key` → ['certificates', 1, 'key'].
      const setting = (problem.setting?.split('.') ?? []).map((k) => (/^\d+$/.test(k) ? Number(k) : k));
      issues.push(source.issueAt([...at, ...setting], problem.message));
    }
  };
  const checkToken = (ref: SecretRef, label: string, at: (string | number)[]): void => {
    try {
      readTokenRef(ref, label, process.env);
    } catch (err) {
      if (!(err instanceof SecretLoadError)) throw err;
      issues.push(source.issueAt(at, err.message));
    }
  };
  const admin = source.config.admin;
  if (admin.tls !== undefined) report(checkCertificateFiles(admin.tls), ['admin', 'tls']);
  if (admin.auth.token !== undefined) checkToken(admin.auth.token, 'admin token', ['admin', 'auth', 'token']);
  const sidecar = source.config.sidecar;
  if (source.config.mode === 'sidecar' && sidecar !== undefined) {
    // Its listeners and upstreams are derived: the files are the identity's, reported there.
    const { cert, key, ca } = sidecar.identity;
    report(checkUpstreamTlsFiles(UpstreamTlsSchema.parse({ cert, key, ca })), ['sidecar', 'identity']);
    if (sidecar.registry.token !== undefined)
      checkToken(sidecar.registry.token, 'registry token', ['sidecar', 'registry', 'token']);
    return sortIssues(issues);
  }
  const redis = source.config.redis;
  if (redis?.password !== undefined) checkToken(redis.password, 'redis password', ['redis', 'password']);
  if (redis?.tls !== undefined) report(checkRedisTlsFiles(redis.tls).problems, ['redis', 'tls']);
  source.config.listeners.forEach((listener, i) => {
    if (listener.tls !== undefined) report(checkCertificateFiles(listener.tls), ['listeners', i, 'tls']);
  });
  const registry = source.config.registry;
  if (registry?.listener?.tls !== undefined)
    report(checkCertificateFiles(registry.listener.tls), ['registry', 'listener', 'tls']);
  for (const [name, upstream] of Object.entries(source.config.upstreams)) {
    if (upstream.tls !== undefined) report(checkUpstreamTlsFiles(upstream.tls), ['upstreams', name, 'tls']);
  }
  if (registry !== undefined) {
    try {
      new Credentials(registry.credentials);
    } catch (err) {
      if (!(err instanceof SecretLoadError)) throw err;
      issues.push(source.issueAt(['registry', 'credentials', 'tokens'], err.message));
    }
  }
  return sortIssues(issues);
}
