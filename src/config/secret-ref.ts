/**
 * Bearer tokens given by reference, never written into the config file: an environment variable or
 * a file (a mounted Kubernetes secret). Read once at start; a missing, short or malformed token
 * stops the start with a message naming the setting, never the value.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';

/** Tokens shorter than this are refused at start: they could be guessed. */
export const MIN_TOKEN_LENGTH = 16;
const MAX_TOKEN_LENGTH = 4096;
const BEARER_RE = /^Bearer[ \t]+([^\s]+)[ \t]*$/i;

/** `env` / `file`: spread into a section's schema, checked with checkSecretRef. */
export const secretRefShape = {
  /** Environment variable holding the token. */
  env: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]*$/)
    .optional(),
  /** File holding the token (surrounding whitespace ignored), e.g. a mounted Kubernetes secret. */
  file: z.string().min(1).optional(),
};

export interface SecretRef {
  readonly env?: string | undefined;
  readonly file?: string | undefined;
}

export function checkSecretRef(t: SecretRef, ctx: z.RefinementCtx): void {
  if ((t.env === undefined) === (t.file === undefined))
    ctx.addIssue({ code: 'custom', path: ['env'], message: 'exactly one of env or file is required' });
}

export class SecretLoadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SecretLoadError';
  }
}

/** The token `ref` points at; throws SecretLoadError starting with `label` (e.g. `registry token ci`). */
export function readTokenRef(ref: SecretRef, label: string, env: NodeJS.ProcessEnv): string {
  let value: string | undefined;
  if (ref.env !== undefined) {
    value = env[ref.env];
    if (value === undefined || value === '')
      throw new SecretLoadError(`${label}: environment variable ${ref.env} is not set`);
  } else {
    try {
      value = readFileSync(ref.file!, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
      throw new SecretLoadError(`${label}: cannot read ${ref.file} (${code})`);
    }
  }
  const token = value.trim();
  if (token.length < MIN_TOKEN_LENGTH)
    throw new SecretLoadError(
      `${label}: shorter than ${MIN_TOKEN_LENGTH} characters (use a random token, e.g. openssl rand -hex 32)`,
    );
  if (/\s/.test(token)) throw new SecretLoadError(`${label}: contains whitespace`);
  return token;
}

/**
 * SHA-256 of a token. Tokens are kept and compared only as digests: the comparison then takes the
 * same time whatever the token, and the token itself is not held.
 */
export function tokenDigest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

/** The token of an `Authorization: Bearer <token>` header; undefined for anything else. */
export function bearerToken(authorization: string | undefined): string | undefined {
  if (authorization === undefined || authorization.length > MAX_TOKEN_LENGTH + 16) return undefined;
  return BEARER_RE.exec(authorization)?.[1];
}
