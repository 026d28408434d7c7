//! `cutter-bench --offsite`: a ~1 GB artifact (compression none) taken and
//! uploaded in `offsite.mode = "required"` to a throwaway SeaweedFS on
//! loopback (multipart, 16 MiB parts, sha256 per part): the upload's wall
//! time and throughput from the daemon's own log line, and the daemon's
//! peak RSS during the whole call, against the same backup without
//! `[offsite]`. Prints the markdown table docs/benchmarks.md records.

use std::path::Path;
use std::process::Stdio;

use crate::harness::{Daemon, SeaweedFs};
use crate::{Bench, daemon_ctl, measure};

/// `duration_ms=N` of the daemon's "offsite copy confirmed" line for `run_id`.
fn upload_ms(log: &str, run_id: &str) -> Option<u64> {
    let line = log.lines().find(|l| {
        l.contains("offsite copy confirmed") && l.contains(&format!("run_id={run_id}"))
    })?;
    let rest = line.split("duration_ms=").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

impl Bench {
    fn one(
        &self,
        dir: &Path,
        db: &str,
        offsite: Option<&SeaweedFs>,
        run_id: &str,
    ) -> (f64, f64, u64, Option<u64>) {
        let mut cfg = self.config(db, dir, "seipdv1", "none", 1);
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
        measure::reset_peak_rss(pid);
        let wall = measure::wall(
            daemon_ctl(&daemon, &["backup", "--run-id", run_id]).stdout(Stdio::null()),
        );
        let rss = measure::peak_rss_mib(pid);
        let size = measure::size(&cfg.backup_dir.join(format!("{run_id}.sql.gpg")));
        (
            wall.as_secs_f64(),
            rss,
            size,
            upload_ms(&daemon.log(), run_id),
        )
    }

    /// The offsite benchmark.
    pub fn offsite(&self, db: &str) {
        let weed = SeaweedFs::start();
        weed.create_bucket("bench", false);
        let local_dir = tempfile::tempdir_in(self.work.path()).expect("tempdir");
        let (lwall, lrss, lsize, _) = self.one(local_dir.path(), db, None, "local-1");
        drop(local_dir);
        let dir = tempfile::tempdir_in(self.work.path()).expect("tempdir");
        let (wall, rss, size, up) = self.one(dir.path(), db, Some(&weed), "offsite-1");
        let up = up.expect("the daemon logged no 'offsite copy confirmed' line");
        println!(
            "\n## Offsite upload: {:.0} MB artifact (compression none), one run\n",
            size as f64 / 1e6
        );
        println!(
            "| call | wall | upload | throughput | daemon peak RSS |\n|---|---:|---:|---:|---:|"
        );
        println!("| `cutterctl backup`, no [offsite] | {lwall:.1} s | – | – | {lrss:.0} MiB |");
        println!(
            "| `cutterctl backup`, offsite required (SeaweedFS on loopback, 16 MiB parts) | {wall:.1} s | {:.1} s | {:.0} MB/s | {rss:.0} MiB |",
            up as f64 / 1000.0,
            size as f64 / 1e6 / (up as f64 / 1000.0)
        );
        assert!(lsize > 0 && size > 0);
    }
}
