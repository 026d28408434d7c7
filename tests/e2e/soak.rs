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

/// Flat: after the first tenth (warm-up: pool connections, thread pools,
/// allocator arenas), the series' last value exceeds its warm value by at
/// most `slack`.
fn assert_flat(what: &str, series: &[u64], slack: u64) {
    let warm = series[series.len() / 10];
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
    let (mut rss, mut fds, mut threads) = (Vec::new(), Vec::new(), Vec::new());
    let mut record = |phase: &str, done: usize, started: Instant| {
        let (r, f, t) = sample(pid);
        println!(
            "{phase:9} {done:6} ops  {:7.1} s  rss {r:7} KiB  fds {f:4}  threads {t:3}",
            started.elapsed().as_secs_f64()
        );
        rss.push(r);
        fds.push(f as u64);
        threads.push(t);
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
            record("backups", i + 1, started);
        }
    }
    let started = Instant::now();
    for i in 0..10_000 {
        client
            .selftest(SelftestRequest::default())
            .await
            .expect("selftest");
        if (i + 1) % 100 == 0 {
            record("selftests", i + 1, started);
        }
    }
    assert_flat("rss KiB", &rss, 16 * 1024);
    assert_flat("open fds", &fds, 4);
    assert_flat("threads", &threads, 8);
}
