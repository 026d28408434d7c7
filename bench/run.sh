#!/usr/bin/env bash
# Reproduces docs/benchmarks.md: release build, then cutter-bench (a ~1 GB
# and a ~3 MB dataset in a throwaway cluster; floor, old way, ours).
# Options pass through: --large-mb N --small-mb N --runs N --small-runs N;
# `--recovery [--sizes 100,1000]` measures restore --beside-live, diff and
# revert on one table with 1% of its rows changed; `--offsite` measures
# instead the upload of the large artifact to a
# throwaway SeaweedFS (throughput, daemon peak RSS); `--runs-kept
# 1,1000,10000 [--small-runs N]` measures backup, selftest, status and list
# latency with that many runs kept in backup.dir (tiny fixture).
# `--fast-dump [--baseline DIR]` compares the governance dataset over TCP
# and a fast-dump hex dataset over the Unix socket, floor against backup
# with every CPU-second (DIR: another build's binaries, measured in the
# same runs). `--help` lists everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --locked --workspace --bins
exec target/release/cutter-bench "$@"
