#!/usr/bin/env bash
# Runs every cargo fuzz target (libFuzzer) for SECS seconds each (default
# 180) on the machine's stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo fuzz
# pass its -Z flags. New interesting inputs land in fuzz/corpus/<target>/
# (minimised afterwards with `cargo fuzz cmin`), crashes in
# fuzz/artifacts/<target>/; the normal test suite replays both
# (crates/cutter-core/tests/fuzz_corpus.rs). Prints libFuzzer's last status
# line per target. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-180}
command -v cargo-fuzz >/dev/null || {
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 1
}
export RUSTC_BOOTSTRAP=1
status=0
for t in config run_id manifest copy_rows structure; do
  log=$(mktemp)
  if cargo fuzz run "$t" -- -max_total_time="$secs" -max_len=65536 -timeout=10 >"$log" 2>&1; then
    echo "$t: $(grep -E '^#[0-9]+' "$log" | tail -n 1)"
  else
    echo "$t: FAILED"
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -n 5
    status=1
  fi
  rm -f "$log"
  cargo fuzz cmin "$t" >/dev/null 2>&1 || true
done
exit "$status"
