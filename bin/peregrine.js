#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=8
// The launcher (`peregrine`, `npm start`, the Docker image and the bench all start the gateway
// through this file). Node 24 runs the TypeScript sources directly (type stripping); there is no
// build step. The #! line's settings keep memory down: --max-semi-space-size caps V8's young
// generation, MALLOC_ARENA_MAX=2 glibc's per-thread arenas (the old generation grows as V8
// chooses: capping it doubled the traced gateway's p99 at saturation); the compile cache
// (NODE_COMPILE_CACHE, else <tmpdir>/node-compile-cache), enabled before the sources are imported, skips the TypeScript
// stripper on later starts. Why each, with the measurements: docs/decisions.md, "Launcher".
import asyncHooks from 'node:async_hooks';
import module from 'node:module';
import { nodeVersionProblem } from './require-node.js';

const problem = nodeVersionProblem(process.version, process.execPath);
if (problem !== undefined) {
  process.stderr.write(`${problem}\n`);
  process.exit(1);
}
// Reading AsyncLocalStorage makes Node decide, once, whether async context frames are on (they
// are, in Node 24), which swaps the prototype of its internal AsyncContextFrame class. Left to the
// first clearTimeout (a sidecar's first log flush comes after it has waited for its application),
// the swap lands after the tick queue's code has met the class's first shape, and those property
// loads stay generic for the process's life (~8k instructions a request; docs/decisions.md, "The
// mesh hop's CPU"). Here it comes before any of the gateway's code runs.
void asyncHooks.AsyncLocalStorage;
module.enableCompileCache?.();
await import('../src/main.ts');
