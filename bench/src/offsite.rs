//! `cutter-bench --offsite`: the large artifact taken three ways, side by
//! side in one run against a throwaway SeaweedFS on loopback, for
//! `compression = "none"` and the default (zip-2):
//! - a local-only backup (no `[offsite]`);
//! - a stock client's upload of that finished artifact (aws-sdk-s3's
//!   `put_object` from the file, default settings);
//! - a backup in `offsite.mode = "required"`, which streams the artifact
//!   while the dump runs (16 MiB parts, sha256 per part).
//!
//! The target: required ≤ 1.1 × max(local, stock upload), and ≤ 1.05 ×
//! local when compression makes the artifact small; the daemon's peak RSS
//! is reported for both backups. Prints the markdown table
//! docs/benchmarks.md records.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;

use crate::harness::{Daemon, SeaweedFs};
use crate::{Bench, daemon_ctl, measure};

/// One measured backup: wall seconds, daemon peak RSS (MiB), artifact
/// bytes, CPU seconds (daemon with pg_dump, SeaweedFS), and how long the
/// streamed upload ran on after the local commit.
struct Taken {
    wall: f64,
    rss: f64,
    size: u64,
    cpu: f64,
    weed_cpu: f64,
    after_commit: Option<f64>,
}

/// `after_commit_ms=N` of the daemon's streamed-upload line for `run_id`.
fn after_commit(log: &str, run_id: &str) -> Option<f64> {
    let line = log
        .lines()
        .find(|l| l.contains("streamed upload of") && l.contains(&format!("run_id={run_id}")))?;
    let rest = line.split("after_commit_ms=").nth(1)?;
    let ms: f64 = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some(ms / 1000.0)
}

impl Bench {
    fn one(
        &self,
        dir: &Path,
        db: &str,
        (algo, level): (&str, u8),
        offsite: Option<&SeaweedFs>,
        run_id: &str,
    ) -> Taken {
        let mut cfg = self.config(db, dir, "seipdv1", algo, level);
        cfg.env = vec![("RUST_LOG".into(), "info".into())];
        if let Some(weed) = offsite {
            let creds =
                weed.credentials_file(dir, "s3-credentials", crate::harness::s3::SECRET_KEY);
            cfg.tail = format!(
                "[offsite]\nurl = \"s3://bench/cutter\"\nendpoint = {:?}\npath_style = true\ncredentials_file = {:?}\nhost = \"bench\"\nmode = \"required\"\nqueue_dir = {:?}\nprobe = false\n",
                weed.endpoint(),
                creds.display().to_string(),
                dir.join("queue").display().to_string()
            );
        }
        let daemon = Daemon::start(dir, &cfg);
        let pid = daemon.pid();
        let weed_pid = offsite.and_then(SeaweedFs::pid);
        measure::reset_peak_rss(pid);
        let cpu = |pid: Option<u32>| pid.map_or(0.0, |p| measure::cpu_of(p, true).as_secs_f64());
        let (cpu0, weed0) = (cpu(Some(pid)), cpu(weed_pid));
        let wall = measure::wall(
            daemon_ctl(&daemon, &["backup", "--run-id", run_id]).stdout(Stdio::null()),
        );
        Taken {
            wall: wall.as_secs_f64(),
            rss: measure::peak_rss_mib(pid),
            size: measure::size(&cfg.backup_dir.join(format!("{run_id}.sql.gpg"))),
            cpu: cpu(Some(pid)) - cpu0,
            weed_cpu: cpu(weed_pid) - weed0,
            after_commit: after_commit(&daemon.log(), run_id),
        }
    }

    /// The offsite benchmark. Each upload gets a fresh server: the
    /// harness's SeaweedFS holds 8 GB (32 volumes of 256 MB), and two 4 GB
    /// artifacts would fill it.
    pub fn offsite(&self, db: &str) {
        let fresh = || {
            let weed = SeaweedFs::start();
            weed.create_bucket("bench", false);
            weed
        };
        println!(
            "\n## Offsite upload while dumping: required mode against a local-only backup and a stock upload, one run each\n"
        );
        println!(
            "| compression | artifact | local-only backup | stock upload of the artifact | old way (local, then upload) | required, streamed | ÷ max(local, stock) | ÷ local | upload after the commit | CPU s: daemon+pg_dump local / required, SeaweedFS stock / required | daemon peak RSS (local / required) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (algo, level) in [("none", 1), ("zip", 2)] {
            let local_dir = tempfile::tempdir_in(self.work.path()).expect("tempdir");
            let local = self.one(local_dir.path(), db, (algo, level), None, "local-1");
            let artifact = local_dir.path().join("backups/local-1.sql.gpg");
            let weed = fresh();
            let weed0 = weed
                .pid()
                .map_or(0.0, |p| measure::cpu_of(p, true).as_secs_f64());
            let stock = stock_upload(&weed, &artifact, &format!("stock/{algo}"));
            let stock_weed_cpu = weed
                .pid()
                .map_or(0.0, |p| measure::cpu_of(p, true).as_secs_f64())
                - weed0;
            drop(weed);
            drop(local_dir);
            let weed = fresh();
            let dir = tempfile::tempdir_in(self.work.path()).expect("tempdir");
            let streamed = self.one(dir.path(), db, (algo, level), Some(&weed), "offsite-1");
            drop(dir);
            drop(weed);
            let worst = local.wall.max(stock);
            println!(
                "| {algo}-{level} | {:.0} MB | {:.1} s | {stock:.1} s ({:.0} MB/s) | {:.1} s | {:.1} s | {:.2} | {:.2} | {} | {:.1} / {:.1}, {stock_weed_cpu:.1} / {:.1} | {:.0} / {:.0} MiB |",
                local.size as f64 / 1e6,
                local.wall,
                local.size as f64 / 1e6 / stock,
                local.wall + stock,
                streamed.wall,
                streamed.wall / worst,
                streamed.wall / local.wall,
                streamed
                    .after_commit
                    .map_or_else(|| "single PUT".to_owned(), |s| format!("{s:.2} s")),
                local.cpu,
                streamed.cpu,
                streamed.weed_cpu,
                local.rss,
                streamed.rss,
            );
            assert!(streamed.size > 0);
        }
    }
}

/// Uploads `path` with a stock client (aws-sdk-s3 `put_object` from the
/// file, default settings); returns its wall seconds.
fn stock_upload(weed: &SeaweedFs, path: &Path, key: &str) -> f64 {
    let client = weed.client();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let started = Instant::now();
        let body = ByteStream::from_path(path).await.expect("body");
        client
            .put_object()
            .bucket("bench")
            .key(key)
            .body(body)
            .send()
            .await
            .expect("stock put_object");
        started.elapsed().as_secs_f64()
    })
}
