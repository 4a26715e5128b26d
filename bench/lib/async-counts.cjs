// Preloaded (NODE_OPTIONS=--require) by bench/mesh-wakeups.ts: counts async resources by type
// (Immediate, TickObject, Timeout, …) in a Peregrine process and, on SIGUSR2, writes the counts
// so far to <tmpdir>/peregrine-async-counts-<pid>.json. Inert in any other process (the bench
// itself, its upstream). An init hook turns on Node's async-hook paths, which cost time: the
// counts are exact, the process's timing under them is not the production one.
'use strict';
const script = process.argv[1] ?? '';
if (/bin[\\/]peregrine\.js$/.test(script)) {
  const { createHook } = require('node:async_hooks');
  const { writeFileSync } = require('node:fs');
  const { join } = require('node:path');
  const { tmpdir } = require('node:os');
  const counts = Object.create(null);
  createHook({
    init(_id, type) {
      counts[type] = (counts[type] ?? 0) + 1;
    },
  }).enable();
  process.on('SIGUSR2', () => {
    writeFileSync(join(tmpdir(), `peregrine-async-counts-${process.pid}.json`), JSON.stringify(counts));
  });
}
