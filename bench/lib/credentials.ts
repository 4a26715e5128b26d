/**
 * Credentials the bench makes for itself at start: one ES256 JWT (with the public JWK Peregrine
 * verifies it against, inline: no JWKS server) and a self-signed certificate for 127.0.0.1.
 * Nothing here is secret or kept: they live in the bench's temp dir and die with it.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { BenchJwtProvider } from './peregrine-config.ts';

export interface BenchJwt extends BenchJwtProvider {
  /** The compact token wrk sends on every request. */
  token: string;
}

export interface BenchTls {
  certFile: string;
  keyFile: string;
  /** The certificate's PEM: the bench's own probes trust it explicitly (it is its own CA). */
  certPem: string;
}

/** One ES256 key pair and one token signed with it, valid for a day (the whole run). */
export async function mintBenchJwt(): Promise<BenchJwt> {
  const { publicKey, privateKey } = await generateKeyPair('ES256');
  const kid = 'bench-es256';
  const issuer = 'https://issuer.bench.peregrine.invalid/';
  const audience = 'peregrine-bench';
  const token = await new SignJWT({ scope: 'bench' })
    .setProtectedHeader({ alg: 'ES256', kid, typ: 'JWT' })
    .setIssuer(issuer)
    .setAudience(audience)
    .setSubject('bench-client')
    .setJti(randomUUID())
    .setIssuedAt()
    .setExpirationTime('24h')
    .sign(privateKey);
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' };
  return { token, publicJwk, issuer, audience };
}

/**
 * A self-signed P-256 certificate for IP 127.0.0.1, valid one day, written to `dir` by openssl.
 * Throws (with openssl's words) when openssl is missing or fails.
 */
export function selfSignedCert(openssl: string, dir: string): BenchTls {
  const certFile = join(dir, 'bench-cert.pem');
  const keyFile = join(dir, 'bench-key.pem');
  execFileSync(
    openssl,
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
      '-keyout',
      keyFile,
      '-out',
      certFile,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  return { certFile, keyFile, certPem: readFileSync(certFile, 'utf8') };
}
