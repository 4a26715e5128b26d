import { describe, expect, it } from 'vitest';
import { codeCategory, samplesByCategory } from '../../../bench/lib/perf-categories.ts';

describe('perf samples by kind of code', () => {
  it('tells TLS, malloc, JIT code by owner, V8 and the kernel apart', () => {
    expect(codeCategory('node', 'tls_read_record')).toBe('OpenSSL');
    expect(codeCategory('node', 'ossl_aes_gcm_encrypt_avx512')).toBe('OpenSSL');
    expect(codeCategory('node', '_aesni_ctr32_ghash_6x')).toBe('OpenSSL');
    expect(codeCategory('node', 'WPACKET_put_bytes__')).toBe('OpenSSL');
    expect(codeCategory('node', 'generic_aes_gcm_cipher_update')).toBe('OpenSSL');
    expect(codeCategory('node', 'node::crypto::NodeBIO::PeekWritable')).toBe('Node TLSWrap and BIO');
    expect(codeCategory('libc.so.6', 'malloc_consolidate')).toBe('libc malloc');
    expect(codeCategory('libc.so.6', '__memmove_avx512_unaligned_erms')).toBe('libc other');
    expect(codeCategory('[JIT] tid 7', "JS:*'onWriteComplete node:internal/stream_base_commons:81:25")).toBe(
      'JS: Node core',
    );
    expect(
      codeCategory('[JIT] tid 7', "JS:*'_resume /x/node_modules/undici/lib/dispatcher/client.js:663:18"),
    ).toBe('JS: undici');
    expect(codeCategory('node', 'v8::internal::compiler::GraphReducer::ReduceTop')).toBe('V8 compilers');
    expect(codeCategory('node', 'Builtins_LoadIC')).toBe('V8 builtins');
    expect(codeCategory('[kernel.kallsyms]', 'vfs_write')).toBe('kernel');
  });

  it('sums a perf report table by category', () => {
    const report = [
      '# comment',
      '     3.99%           156  [kernel.kallsyms]    [k] finish_task_switch.isra.0',
      '     0.50%            20  node                 [.] SSL_read',
      '     0.25%            10  node                 [.] tls_read_record',
      "     0.10%             4  [JIT] tid 16391      [.] RegExp.> src: '[^\\t]' flags: ''",
    ].join('\n');
    expect(Object.fromEntries(samplesByCategory(report))).toEqual({
      kernel: 156,
      OpenSSL: 30,
      'JS: regular expressions': 4,
    });
  });
});
