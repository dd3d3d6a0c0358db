#!/usr/bin/env node
// Entry point of the `postern` command: runs the compiled CLI (npm run build writes dist/).
import('../dist/cli.js')
  .then((m) => m.main(process.argv.slice(2)))
  .then(
    (code) => {
      if (typeof code === 'number') process.exitCode = code;
    },
    (err) => {
      console.error(err?.stack ? err.stack : String(err));
      process.exitCode = 2;
    },
  );
