//! The soak (docs/reliability.md): one daemon, 1,000 small backups and
//! 10,000 selftests back to back, sampling its resident memory, open file
//! descriptors and threads every 100 operations, and checking that the
//! three series are flat. Minutes long, so it is `#[ignore]`d in the suite
//! and run by `bench/soak.sh`, which records its output.

use std::time::Instant;

use cutter_backup::v1::{PreWriteBackupRequest, SelftestRequest};

use crate::harness::{Grants, KeyKind, World};

/// (RSS KiB, open fds, threads) of `pid`.
fn sample(pid: u32) -> (u64, usize, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("status field")
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .count();
    (field("VmRSS:"), fds, field("Threads:"))
}

/// Flat, per phase: after the first tenth of its samples (warm-up: pool
/// connections, thread pools, allocator arenas; at least one sample), the
/// last value exceeds the warm value by at most `slack`, and no value by
/// more than twice that.
fn assert_flat(what: &str, series: &[u64], slack: u64) {
    let warm = series[(series.len() / 10).max(1) - 1];
    let last = series[series.len() - 1];
    let max = series
        .iter()
        .skip(series.len() / 10)
        .max()
        .copied()
        .unwrap_or(0);
    println!("{what}: warm {warm}, last {last}, max after warm-up {max}");
    assert!(
        last <= warm + slack && max <= warm + 2 * slack,
        "{what} grew: warm {warm}, last {last}, max {max} (slack {slack})"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "minutes long: run by bench/soak.sh"]
async fn soak_a_thousand_backups_and_ten_thousand_selftests() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let daemon = world.start(&world.config(Some(&fpr), Some(cert)));
    let pid = daemon.pid();
    let mut client = daemon.client().await;
    // (rss, fds, threads) series per phase.
    let mut series: [[Vec<u64>; 3]; 2] = Default::default();
    let mut record = |phase: usize, done: usize, started: Instant| {
        let (r, f, t) = sample(pid);
        println!(
            "{:9} {done:6} ops  {:7.1} s  rss {r:7} KiB  fds {f:4}  threads {t:3}",
            ["backups", "selftests"][phase],
            started.elapsed().as_secs_f64()
        );
        series[phase][0].push(r);
        series[phase][1].push(f as u64);
        series[phase][2].push(t);
    };
    let started = Instant::now();
    for i in 0..1000 {
        let reply = client
            .pre_write_backup(PreWriteBackupRequest {
                run_id: format!("soak-{i}"),
            })
            .await
            .expect("backup")
            .into_inner();
        assert!(!reply.sha256.is_empty());
        if (i + 1) % 100 == 0 {
            record(0, i + 1, started);
        }
    }
    let started = Instant::now();
    for i in 0..10_000 {
        client
            .selftest(SelftestRequest::default())
            .await
            .expect("selftest");
        if (i + 1) % 100 == 0 {
            record(1, i + 1, started);
        }
    }
    for (phase, [rss, fds, threads]) in ["backups", "selftests"].iter().zip(&series) {
        assert_flat(&format!("{phase}: rss KiB"), rss, 16 * 1024);
        assert_flat(&format!("{phase}: open fds"), fds, 4);
        assert_flat(&format!("{phase}: threads"), threads, 8);
    }
}
