//! `cutter-bench --runs-kept 1,1000,10000 [--small-runs N]`: what a
//! backup, a selftest, a status and a list cost with N runs kept in
//! `backup.dir`, on a tiny fixture (ten rows a table).
//!
//! Each N gets its own directory and daemon. A directory is seeded with one
//! genuine backup (`cutterctl backup`), then filled to N runs by copying
//! that artifact under new run_ids with manifests that name the new run, an
//! hour apart going back, each signed with the daemon's own signing key:
//! runs `list` shows as complete and `verify` would pass. The daemon is
//! restarted on the filled directory and `list` must count every run before
//! anything is timed. Then rounds go over the daemons in turn (so load on
//! the shared machine hits every N alike): `cutterctl backup` (a new run
//! each time, which stays: N is the count when timing starts), `cutterctl
//! selftest`, `cutterctl status`, and fewer rounds of `cutterctl list` to
//! /dev/null. Prints the markdown table docs/benchmarks.md records.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::runs::keep_copies;
use crate::harness::{Daemon, DaemonConfig};
use crate::measure::{median, ms, wall};
use crate::{Bench, daemon_ctl};

/// One N: its directory, config and running daemon.
struct Kept {
    n: usize,
    cfg: DaemonConfig,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

/// Runs in `list --json` shown complete, and all runs.
fn listed(daemon: &Daemon) -> (usize, usize) {
    let out = daemon.ctl(&["list", "--json"]);
    assert!(out.status.success(), "list failed: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list --json");
    let all = v["artifacts"].as_array().cloned().unwrap_or_default();
    let complete = all
        .iter()
        .filter(|a| a["artifact_state"] == "complete")
        .count();
    (complete, all.len())
}

/// The `cutter_backup_artifacts` gauge the daemon reports.
fn metric_artifacts(daemon: &Daemon) -> Option<u64> {
    let out = daemon.ctl(&["metrics"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("cutter_backup_artifacts "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

impl Bench {
    /// Sets up one N: seed, fill, restart, check `list` counts them all.
    fn kept(&self, db: &str, n: usize) -> Kept {
        let dir = tempfile::tempdir_in(self.work.path()).expect("tempdir");
        let cfg = self.config(db, dir.path(), "seipdv1", "zip", 2);
        let seed = "seed";
        let first = Daemon::start(dir.path(), &cfg);
        first.backup(seed);
        drop(first);
        keep_copies(
            dir.path(),
            &cfg.backup_dir,
            seed,
            "kept",
            n.saturating_sub(1),
        );
        let daemon = Daemon::start(dir.path(), &cfg);
        let (complete, all) = listed(&daemon);
        assert_eq!(
            (complete, all),
            (n, n),
            "list must show every kept run as complete"
        );
        Kept {
            n,
            cfg,
            daemon,
            _dir: dir,
        }
    }

    /// The benchmark at each count of runs kept.
    pub fn runs_kept(&self, db: &str, counts: &[usize], rounds: usize) {
        let mut kept: Vec<Kept> = counts.iter().map(|&n| self.kept(db, n)).collect();
        eprintln!("filled: {counts:?}; load before timing {}", load());
        let time =
            |k: &Kept, args: &[&str]| wall(daemon_ctl(&k.daemon, args).stdout(Stdio::null()));
        let mut t: Vec<[Vec<Duration>; 4]> = kept.iter().map(|_| Default::default()).collect();
        let mut loads = vec![load()];
        // A warm-up round first (pool, page cache), not counted.
        for k in &kept {
            time(k, &["selftest"]);
            time(k, &["status"]);
        }
        for r in 0..rounds {
            for (k, t) in kept.iter().zip(t.iter_mut()) {
                let run_id = format!("measured-{r:03}");
                t[0].push(time(k, &["backup", "--run-id", &run_id]));
                t[1].push(time(k, &["selftest"]));
                t[2].push(time(k, &["status"]));
            }
        }
        loads.push(load());
        for _ in 0..rounds.div_ceil(2) {
            for (k, t) in kept.iter().zip(t.iter_mut()) {
                t[3].push(time(k, &["list"]));
            }
        }
        loads.push(load());
        println!(
            "\n## Runs kept: tiny fixture, median of {rounds} rounds ({} for list), load {}\n",
            rounds.div_ceil(2),
            loads.join(" → ")
        );
        println!(
            "| runs kept | `cutterctl backup` | `cutterctl selftest` | `cutterctl status` | `cutterctl list` | artifacts metric after |\n|---:|---:|---:|---:|---:|---:|"
        );
        for (k, t) in kept.iter_mut().zip(t.iter_mut()) {
            for v in t.iter_mut() {
                v.sort();
            }
            let after = k.n + rounds;
            let metric = metric_artifacts(&k.daemon);
            assert_eq!(
                metric,
                Some(after as u64),
                "the artifacts gauge must count every run in {}",
                k.cfg.backup_dir.display()
            );
            println!(
                "| {} | {} ms | {} ms | {} ms | {} ms | {after} |",
                k.n,
                ms(median(&t[0])),
                ms(median(&t[1])),
                ms(median(&t[2])),
                ms(median(&t[3])),
            );
        }
        if let (Some(first), Some(last)) = (t.first(), t.last()) {
            let ratio = |i: usize| median(&last[i]).as_secs_f64() / median(&first[i]).as_secs_f64();
            println!(
                "\nlargest / smallest: backup {:.2}x, selftest {:.2}x, status {:.2}x, list {:.2}x",
                ratio(0),
                ratio(1),
                ratio(2),
                ratio(3)
            );
        }
    }
}
