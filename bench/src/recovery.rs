//! `cutter-bench --recovery [--sizes 100,1000]`: for each size (MB of
//! dump), one table of that size is backed up, a simulated run changes 1%
//! of its rows (0.5% updated, 0.25% deleted, 0.25% inserted), and then:
//! `restore --beside-live` against a plain `psql` load of the same dump
//! into a scratch database, `diff --json`, and `revert --apply`, each with
//! its wall time and cutterctl's peak RSS (VmHWM, polled while it runs).
//! Prints the markdown table docs/benchmarks.md records.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Bench;
use crate::harness::Daemon;
use crate::harness::pg::ROLE;
use crate::harness::proc::workspace_bin;

/// Runs `cmd` to success; wall time and peak RSS in MiB, polled.
fn watched(cmd: &mut Command) -> (Duration, f64) {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut peak = 0.0f64;
    let status = loop {
        peak = peak.max(crate::measure::peak_rss_mib(child.id()));
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{cmd:?} failed: {status}");
    (t.elapsed(), peak)
}

impl Bench {
    /// The recovery benchmark at each size.
    pub fn recovery(&self, sizes: &[u64]) {
        let secret = self.work.path().join("bench-secret.asc");
        self.gpg.export_secret(&self.fpr, &secret);
        println!("\n## Recovery: one table, 1% of its rows changed by the run\n");
        println!(
            "| dump | rows | `restore --beside-live` | plain `psql` load | `diff --json` | `revert --apply` | cutterctl peak RSS (beside / diff / revert) |\n|---:|---:|---:|---:|---:|---:|---:|"
        );
        for &mb in sizes {
            self.recovery_at(mb, &secret);
        }
    }

    fn recovery_at(&self, mb: u64, secret: &Path) {
        let db = format!("directus_rec{mb}");
        let rows = mb * 1024 * 1024 / 105;
        let t = Instant::now();
        self.pg.psql("postgres", &format!("CREATE DATABASE {db}"));
        crate::harness::proc::run(self.pg.psql_cmd(&db).args([
            "-c",
            &format!(
                "CREATE SCHEMA cutter_governance; GRANT USAGE ON SCHEMA cutter_governance TO {ROLE};\n\
                 CREATE TABLE cutter_governance.big (id bigint PRIMARY KEY, n int, pad text);\n\
                 INSERT INTO cutter_governance.big SELECT g, g % 1000, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) \
                 FROM generate_series(1, {rows}) g;\n\
                 GRANT SELECT ON cutter_governance.big TO {ROLE};"
            ),
        ]));
        eprintln!(
            "generated {db} ({rows} rows) in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        let dir = tempfile::tempdir_in(self.work.path()).expect("tempdir");
        let mut cfg = self.config(&db, dir.path(), "seipdv1", "zip", 2);
        cfg.tables = vec!["cutter_governance.big".into()];
        let daemon = Daemon::start(dir.path(), &cfg);
        crate::measure::wall(
            crate::daemon_ctl(&daemon, &["backup", "--run-id", "rec-1"]).stdout(Stdio::null()),
        );
        // The run: 1% of the rows.
        let step = 200;
        self.pg.psql(
            &db,
            &format!(
                "UPDATE cutter_governance.big SET pad = 'changed' WHERE id % {step} = 1;\n\
                 UPDATE cutter_governance.big SET n = -1 WHERE id % {step} = 2;\n\
                 DELETE FROM cutter_governance.big WHERE id % {step} = 3;\n\
                 INSERT INTO cutter_governance.big SELECT {rows} + g, 0, 'new' FROM generate_series(1, {rows} / {step}) g;"
            ),
        );
        let config = daemon.socket.with_file_name("backupd.toml");
        let live = self.pg.scratch_url(&db);
        let ctl = |args: &[&str]| {
            let mut c = Command::new(workspace_bin("cutterctl"));
            c.arg("--socket").arg(&daemon.socket).args(args);
            c.arg("--config").arg(&config);
            c
        };
        let (beside, beside_rss) = watched(
            ctl(&["restore", "rec-1", "--beside-live", "--live", &live])
                .arg("--secret-key")
                .arg(secret)
                .arg("--passphrase-file")
                .arg(self.gpg.passphrase_file()),
        );
        // The same rows the plain way: the decrypted dump into psql.
        let sql = dir.path().join("rec-1.sql");
        crate::measure::wall(
            ctl(&["restore", "rec-1"])
                .arg("--to-file")
                .arg(&sql)
                .arg("--secret-key")
                .arg(secret)
                .arg("--passphrase-file")
                .arg(self.gpg.passphrase_file())
                .stdout(Stdio::null()),
        );
        let scratch = format!("{db}_plain");
        self.pg
            .psql("postgres", &format!("CREATE DATABASE {scratch}"));
        self.pg.psql(&scratch, "CREATE SCHEMA cutter_governance");
        let plain = crate::measure::wall(
            self.pg
                .psql_cmd(&scratch)
                .args(["--single-transaction", "-f"])
                .arg(&sql)
                .stdout(Stdio::null()),
        );
        let (diff, diff_rss) = watched(&mut ctl(&["--json", "diff", "rec-1", "--live", &live]));
        let (revert, revert_rss) = watched(&mut ctl(&[
            "revert",
            "rec-1",
            "--live",
            &live,
            "--apply",
            "--no-backup",
        ]));
        println!(
            "| {mb} MB | {rows} | {:.1} s | {:.1} s | {:.1} s | {:.1} s | {beside_rss:.0} / {diff_rss:.0} / {revert_rss:.0} MiB |",
            beside.as_secs_f64(),
            plain.as_secs_f64(),
            diff.as_secs_f64(),
            revert.as_secs_f64()
        );
        let left = self.pg.psql(
            &db,
            "SELECT count(*) FROM cutter_governance.big WHERE pad = 'changed' OR n = -1 OR pad = 'new'",
        );
        assert_eq!(left, "0", "the revert left changed rows");
    }
}
