#!/usr/bin/env bash
# What `npm test` runs: make sure the real servers exist, lint, type-check and build, run every test, and end
# with one plain line "N passed, N failed[, N skipped]" that CI reads.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

if ! bash scripts/install-system-deps.sh; then
  echo "0 passed, 1 failed"
  exit 1
fi

# Lint and format check (Biome, biome.jsonc) and the type check of the tests (tsconfig.test.json) run before any test;
# LINT=0 / TYPECHECK_TESTS=0 skip them for a quick local run. `npm run lint` and `npm run typecheck`
# run them by hand.
LINT="${LINT:-1}"
TYPECHECK_TESTS="${TYPECHECK_TESTS:-1}"

if [ "$LINT" = 1 ] && ! npx biome check --error-on-warnings .; then
  echo "lint or format check failed (npx biome check --error-on-warnings .; npm run format fixes the format)"
  echo "0 passed, 1 failed"
  exit 1
fi

if ! npx tsc -p .; then
  echo "type check failed"
  echo "0 passed, 1 failed"
  exit 1
fi

if [ "$TYPECHECK_TESTS" = 1 ] && ! npx tsc -p tsconfig.test.json; then
  echo "type check of the tests failed (npx tsc -p tsconfig.test.json)"
  echo "0 passed, 1 failed"
  exit 1
fi

results=.vitest-results.json
rm -f "$results"
npx vitest run --reporter=default --reporter=json --outputFile="$results" "$@"
vitest_status=$?

summary=$(node -e '
const fs = require("fs");
let r;
try { r = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); } catch { console.log("0 passed, 1 failed"); process.exit(0); }
let failed = r.numFailedTests;
// A file that fails before any test runs (import error, hook failure) reports no failed test: count it once.
for (const f of r.testResults ?? []) {
  if (f.status === "failed" && !(f.assertionResults ?? []).some((a) => a.status === "failed")) failed++;
}
const skipped = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
console.log(`${r.numPassedTests} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ""));
' "$results")
echo "$summary"

case "$summary" in
  *" 0 failed"*) ;;
  *) exit 1 ;;
esac
exit "$vitest_status"
