#!/usr/bin/env bash
# Runs every fuzz target of the repository for a while (default 20s each):
#   scripts/fuzz.sh [DURATION] [PACKAGE-PATTERN]
# The seed corpora (testdata/fuzz/ and f.Add seeds) run in plain `go test` as regression
# tests; this is for finding new inputs. A crasher is written to testdata/fuzz/ by go test:
# commit it with the fix.
set -euo pipefail
cd "$(dirname "$0")/.."
time=${1:-20s}
pattern=${2:-./...}
status=0
for pkg in $(go list "$pattern"); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "== $pkg $target ($time)"
    if ! go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$time"; then
      status=1
    fi
  done
done
exit $status
