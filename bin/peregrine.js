#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=8 --heap-growing-percent=30
// The launcher (`peregrine`, `npm start`, the Docker image and the bench all start the gateway
// through this file). Node 24 runs the TypeScript sources directly (type stripping); there is no
// build step.
//
// --max-semi-space-size (the V8 flag on the line above, MiB): V8 grows its young generation to
// several times its start size under sustained allocation, which a proxy does on every request; a
// smaller cap keeps the resident set near the live heap (figures in docs/benchmarks.md).
//
// --heap-growing-percent=30: after each mark-compact V8 lets the old generation grow to 1.3× what
// survived (by default up to 4× when GC looks cheap). Under load with tracing on, sampled spans
// are promoted while they wait for the exporter; V8 keeps the old generation's peak pages, so a
// late mark-compact is resident memory for good: 20 MB less peak RSS, no measurable CPU cost.
//
// MALLOC_ARENA_MAX=2 (glibc; other C libraries ignore it): V8's worker threads (compiler, GC)
// would otherwise each get a malloc arena that keeps its peak size, about 10 MiB apiece under load.
//
// The compile cache keeps the stripped TypeScript and V8's code cache on disk (in
// NODE_COMPILE_CACHE, else <tmpdir>/node-compile-cache), so later starts skip the TypeScript
// stripper altogether and start smaller and faster. Enabled before the sources are imported.
import module from 'node:module';
import { nodeVersionProblem } from './require-node.js';

const problem = nodeVersionProblem(process.version, process.execPath);
if (problem !== undefined) {
  process.stderr.write(`${problem}\n`);
  process.exit(1);
}
module.enableCompileCache?.();
await import('../src/main.ts');
