import { defineConfig } from 'vitest/config';

/**
 * `npm run test:unit`: the tests that need no server and no network: codecs, session transcripts,
 * MIME, policy, config, in-process fuzzing. Some use Python's email package as an oracle (a short
 * child process); none starts Dovecot, clamd, a TLS server, openssl or a ZIP extractor. They run in
 * well under a minute; `npm test` runs them and everything else.
 * A new test file under these folders is a unit test unless it is listed in UNIT_EXCLUDE.
 * Not here: test/fuzz/mime and zip (bounded fuzzers with the ZIP extractors and long budgets),
 * test/tls and test/cli/cli.test.ts (openssl), test/scanners (clamd), test/integration (Dovecot, clamd).
 */
export const UNIT_INCLUDE = [
  'test/docs/**/*.test.ts',
  'test/protocol/**/*.test.ts',
  'test/session/**/*.test.ts',
  'test/inspect/**/*.test.ts',
  'test/relay/**/*.test.ts',
  'test/quarantine/**/*.test.ts',
  'test/log/**/*.test.ts',
  'test/mime/**/*.test.ts',
  'test/policy/**/*.test.ts',
  'test/config/**/*.test.ts',
  'test/fuzz/session.test.ts', // in process (sessions, inspectors, engine), bounded by cases and time
];

/** Files under UNIT_INCLUDE that start servers or external programs. */
export const UNIT_EXCLUDE = [
  'test/mime/zip-differentials.test.ts', // 7-Zip, unzip, bsdtar, python3 read the same ZIPs
  'test/mime/hidden-archive.test.ts', // 7-Zip and GNU tar read archives behind other bytes
  'test/mime/compound.test.ts', // 7-Zip says which compound files open
  'test/mime/inflate-count.test.ts', // 7-Zip writes what it inflates
  'test/inspect/imap-inspector-writer.test.ts', // a session against real Dovecot
  'test/relay/hold-timeout-default.test.ts', // a real postern with clamd and rspamd configured
  'test/**/zz-*.test.ts', // scratch probes
];

export default defineConfig({
  test: {
    include: UNIT_INCLUDE,
    exclude: UNIT_EXCLUDE,
    testTimeout: 30_000,
    pool: 'forks',
  },
});
