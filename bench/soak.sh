#!/usr/bin/env bash
# The soak (docs/reliability.md): one daemon, 1,000 small backups, then
# 10,000 selftests, back to back, against a throwaway PostgreSQL. It prints
# the daemon's RSS, open fds and threads every 100 operations and fails if a
# series is not flat (tests/e2e/soak.rs says what flat means). Debug build,
# the binaries the test suite runs. Not part of CI: minutes long.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
features=(--features cutter-backupd/failpoints)
cargo build --workspace --bins --locked "${features[@]}"
cargo test --workspace --locked "${features[@]}" --test e2e -- \
  --ignored --exact --nocapture soak::soak_a_thousand_backups_and_ten_thousand_selftests
