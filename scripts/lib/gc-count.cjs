// Preloaded into a benchmarked process (`node --require scripts/lib/gc-count.cjs`, relay-ab --gc):
// counts its garbage collections by kind with their main-thread milliseconds, and writes them as JSON
// to $POSTERN_GC_COUNT_FILE when the process exits. A benchmark aid, never part of postern.
'use strict';
const { PerformanceObserver, constants } = require('node:perf_hooks');
const { writeFileSync } = require('node:fs');

const file = process.env.POSTERN_GC_COUNT_FILE;
if (file) {
  const kinds = {
    [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
    [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
  };
  const counts = {};
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const k = kinds[e.detail?.kind] ?? String(e.detail?.kind);
      counts[k] ??= { n: 0, ms: 0 };
      counts[k].n++;
      counts[k].ms += e.duration;
    }
  }).observe({ entryTypes: ['gc'] });
  process.on('exit', () => writeFileSync(file, JSON.stringify(counts)));
}
