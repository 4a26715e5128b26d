/**
 * `peregrine certs init | issue`: a development CA for a mesh, and SPIFFE certificates for its
 * services. Issuing again for a service replaces its files (key, then certificate, each by an
 * atomic rename), which is how a development mesh rotates: gateways and sidecars watching the
 * files load the new pair for new connections.
 *
 * Exit codes: 0 done, 2 usage errors and refusals (an existing CA, an unusable one, bad input).
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parseDuration } from '../config/duration.ts';
import { createDevCa, DevCaError, issueSvid, loadDevCa } from '../tls/dev-ca.ts';
import { isTrustDomain, isWorkloadId } from '../tls/spiffe.ts';
import type { CliOutput } from './validate.ts';

const DEFAULT_DIR = 'dev-ca';
const DEFAULT_TRUST_DOMAIN = 'peregrine.local';
const CA_TTL = '8760h';
const LEAF_TTL = '24h';

export const CERTS_USAGE = `Usage:
  peregrine certs init [--dir <dir>] [--trust-domain <name>] [--ttl <duration>] [--force]
      create a development CA: <dir>/ca.crt and <dir>/ca.key (mode 0600)
  peregrine certs issue --service <name> [--namespace <ns>] [--ttl <duration>] [--trust-domain <name>]
                        [--dir <dir>] [--out <dir>] [--dns <name>]...
      issue (or reissue, to rotate) an X.509-SVID for spiffe://<trust-domain>/ns/<ns>/sa/<service>:
      <out>/tls.crt, <out>/tls.key (mode 0600) and <out>/ca.crt

  --dir <dir>             the CA's directory (default ${DEFAULT_DIR})
  --trust-domain <name>   init: the CA's trust domain (default ${DEFAULT_TRUST_DOMAIN});
                          issue: default the CA's own
  --ttl <duration>        validity, e.g. 24h (init default ${CA_TTL}, issue default ${LEAF_TTL})
  --namespace <ns>        default "default"
  --out <dir>             default <dir>/<namespace>/<service>
  --dns <name>            also a DNS SAN, for clients that check host names (repeatable)
  --force                 init: replace an existing CA (every certificate it issued stops verifying)

Development only: docs/mesh.md says where production certificates come from.`;
/** A Kubernetes-style name: what a namespace or service account may be called. */
const SEGMENT_RE = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/;
const DNS_RE =
  /^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

class UsageError extends Error {}

function ttl(value: string | undefined, fallback: string): number {
  const ms = parseDuration(value ?? fallback);
  if (ms === undefined || ms <= 0)
    throw new UsageError(`--ttl: invalid duration ${JSON.stringify(value)} (e.g. 24h)`);
  return ms;
}

function trustDomainOf(value: string): string {
  if (!isTrustDomain(value))
    throw new UsageError(
      `--trust-domain: ${JSON.stringify(value)} is not a trust domain (lower-case letters, digits, . - _)`,
    );
  return value;
}

function segment(value: string | undefined, flag: string): string {
  if (value === undefined) throw new UsageError(`--${flag} is required`);
  if (!SEGMENT_RE.test(value))
    throw new UsageError(
      `--${flag}: ${JSON.stringify(value)} must be lower-case letters, digits, . - _ (at most 63)`,
    );
  return value;
}

/** Write a file by an atomic rename, so a watcher never reads half of it; `mode` before the rename. */
function writeAtomically(file: string, content: string, mode: number): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, content, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, file);
}

function readOrFail(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(
      code === 'ENOENT'
        ? `${what} ${file} not found; create a CA first: peregrine certs init --dir <dir>`
        : `${what} ${file}: cannot read (${code ?? 'error'})`,
    );
  }
}

async function init(argv: string[], out: CliOutput): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      dir: { type: 'string' },
      'trust-domain': { type: 'string' },
      ttl: { type: 'string' },
      force: { type: 'boolean' },
    },
  });
  const dir = values.dir ?? DEFAULT_DIR;
  const trustDomain = trustDomainOf(values['trust-domain'] ?? DEFAULT_TRUST_DOMAIN);
  const ttlMs = ttl(values.ttl, CA_TTL);
  const files = { cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') };
  if (!values.force && (existsSync(files.key) || existsSync(files.cert)))
    throw new UsageError(
      `${dir} already holds a CA; --force replaces it (its certificates then stop verifying)`,
    );
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = await createDevCa(trustDomain, ttlMs);
  writeAtomically(files.key, ca.key, 0o600);
  writeAtomically(files.cert, ca.cert, 0o644);
  out.stdout(
    `CA for spiffe://${trustDomain}: ${files.cert} (key ${files.key}), valid ${values.ttl ?? CA_TTL}`,
  );
}

async function issue(argv: string[], out: CliOutput): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      service: { type: 'string' },
      namespace: { type: 'string' },
      ttl: { type: 'string' },
      'trust-domain': { type: 'string' },
      dir: { type: 'string' },
      out: { type: 'string' },
      dns: { type: 'string', multiple: true },
    },
  });
  const service = segment(values.service, 'service');
  const namespace = segment(values.namespace ?? 'default', 'namespace');
  const ttlMs = ttl(values.ttl, LEAF_TTL);
  for (const name of values.dns ?? [])
    if (!DNS_RE.test(name)) throw new UsageError(`--dns: ${JSON.stringify(name)} is not a DNS name`);
  const dir = values.dir ?? DEFAULT_DIR;
  const caFiles = { cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') };
  const ca = await loadDevCa(
    readOrFail(caFiles.cert, 'CA certificate'),
    readOrFail(caFiles.key, 'CA key'),
    caFiles,
  );
  const given = values['trust-domain'];
  const trustDomain = given !== undefined ? trustDomainOf(given) : ca.trustDomain;
  if (trustDomain === undefined)
    throw new UsageError(`${caFiles.cert} names no trust domain (no spiffe:// URI SAN); give --trust-domain`);
  const spiffeId = `spiffe://${trustDomain}/ns/${namespace}/sa/${service}`;
  if (!isWorkloadId(spiffeId)) throw new UsageError(`${spiffeId} is not a SPIFFE ID`);
  const leaf = await issueSvid(ca, { spiffeId, commonName: service, ttlMs, dns: values.dns });
  const outDir = values.out ?? join(dir, namespace, service);
  mkdirSync(outDir, { recursive: true });
  const files = { cert: join(outDir, 'tls.crt'), key: join(outDir, 'tls.key'), ca: join(outDir, 'ca.crt') };
  // Key, then certificate, back to back: a watcher loads them as one set (it waits for changes to
  // settle), and one that still saw the new key alone would reject the mismatched pair and keep
  // the current one until the certificate followed.
  writeAtomically(files.key, leaf.key, 0o600);
  writeAtomically(files.cert, leaf.cert, 0o644);
  writeAtomically(files.ca, ca.pem, 0o644);
  out.stdout(
    `${spiffeId}: ${files.cert} (key ${files.key}, CA ${files.ca}), valid ${values.ttl ?? LEAF_TTL}`,
  );
}

/** `peregrine certs <init|issue> ...`; returns the exit code. */
export async function runCerts(argv: string[], out: CliOutput): Promise<number> {
  const [command, ...rest] = argv;
  if (command === '--help' || command === '-h' || rest.includes('--help') || rest.includes('-h')) {
    out.stdout(CERTS_USAGE);
    return 0;
  }
  try {
    if (command === 'init') await init(rest, out);
    else if (command === 'issue') await issue(rest, out);
    else {
      const what =
        command === undefined ? 'a command is required' : `unknown command ${JSON.stringify(command)}`;
      out.stderr(`peregrine certs: ${what}\n\n${CERTS_USAGE}`);
      return 2;
    }
    return 0;
  } catch (err) {
    if (
      err instanceof UsageError ||
      err instanceof DevCaError ||
      (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')
    ) {
      out.stderr(`peregrine certs ${command}: ${(err as Error).message}`);
      return 2;
    }
    throw err;
  }
}
