// `postern` from the TypeScript sources, for tests that run it as a child process (kill -9, signals):
// node --import ./test/collector/helpers/ts-register.mjs test/collector/helpers/postern-child.ts ARGS...
import { main } from '../../../src/cli.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err);
    process.exitCode = 2;
  },
);
