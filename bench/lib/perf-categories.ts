/**
 * Where a process's CPU time went, from `perf report --no-children --sort dso,sym -g none -n`
 * (cpu-clock samples; with `--perf-basic-prof` V8's JIT code is named): samples by kind of code,
 * so two gateways' profiles compare at a glance (bench/mesh-counters.ts). TLS shows apart: OpenSSL
 * (record layer and cipher), Node's TLSWrap and its BIO, and the malloc they drive.
 */

/** The kind of code a sampled symbol of `dso` belongs to. */
export function codeCategory(dso: string, sym: string): string {
  if (dso.includes('kernel')) return 'kernel';
  if (dso.startsWith('libc')) {
    return /malloc|free|consolidate|memalign|realloc|calloc|unlink_chunk/.test(sym)
      ? 'libc malloc'
      : 'libc other';
  }
  if (dso.includes('JIT')) {
    if (sym.includes('wasm')) return 'JS: undici llhttp (wasm)';
    if (sym.startsWith('RegExp')) return 'JS: regular expressions';
    if (sym.includes(' node:')) return 'JS: Node core';
    if (sym.includes('/undici/')) return 'JS: undici';
    if (sym.includes('/src/')) return 'JS: Peregrine';
    return 'JS: other';
  }
  if (/TLSWrap|NodeBIO|node::crypto::/.test(sym)) return 'Node TLSWrap and BIO';
  // The record layer's packet writer and BIO adapters, and the AES-GCM assembly, are OpenSSL's too.
  if (
    /^(SSL|ssl|tls|ossl|EVP|evp|aes|_aesni|gcm|vaes|CRYPTO|BIO_|OPENSSL|ERR_|RAND|OSSL|ghash|W?PACKET_|generic_aes|bread_conv|bwrite_conv)/.test(
      sym,
    )
  )
    return 'OpenSSL';
  if (/compiler::|[Mm]aglev|[Tt]urboshaft|Baseline.*Compil/.test(sym)) return 'V8 compilers';
  if (
    /Scaveng|MarkCompact|Marking|Sweep|Heap::|Evacuat|Remembered|SlotSet|ArrayBufferSweeper|FreeList/.test(
      sym,
    )
  )
    return 'V8 GC';
  if (sym.startsWith('Builtins_')) return 'V8 builtins';
  if (sym.startsWith('v8::')) return 'V8 other';
  if (/^uv_|^uv__/.test(sym)) return 'libuv';
  if (sym.startsWith('node::') || sym.startsWith('llhttp')) return 'Node native';
  return `other (${dso})`;
}

/** Samples by category from perf report's table (lines `  1.23%  456  dso  [.] symbol`). */
export function samplesByCategory(report: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of report.split('\n')) {
    const m = /^\s*[\d.]+%\s+(\d+)\s+(\[JIT\] tid \d+|\S+)\s+\[[.k]\]\s+(.*)$/.exec(line);
    if (!m) continue;
    const cat = codeCategory(m[2]!, m[3]!.trim());
    out.set(cat, (out.get(cat) ?? 0) + Number(m[1]));
  }
  return out;
}
