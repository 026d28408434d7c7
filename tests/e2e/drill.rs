//! `cutterctl drill`: the newest backup restores into a scratch database
//! cutterctl names and is compared with its signed manifest; a drill leaves
//! no database and no role behind, from the local directory or from the
//! bucket after the host lost it; a corrupted artifact, a wrong passphrase
//! and a missing table each give a FAIL with the reason in the JSON and the
//! metrics (promtool-clean), and leave nothing behind either.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::adversarial::{config_path, plant, setup};
use crate::harness::proc::{require, workspace_bin};
use crate::harness::{Daemon, World, text};
use crate::observability::check_metrics;

/// `cutterctl --json drill …` with the exported key; the JSON record.
fn drill(
    world: &World,
    config: &Path,
    secret: &Path,
    passphrase: &Path,
    signer: &Path,
    extra: &[&str],
) -> (std::process::Output, serde_json::Value) {
    let metrics = world.work.path().join("drill.prom");
    let report = world.work.path().join("drill.md");
    let out = Command::new(workspace_bin("cutterctl"))
        .args(["--json", "drill", "--into-cluster"])
        .arg(world.pg.scratch_url("postgres"))
        .arg("--secret-key")
        .arg(secret)
        .arg("--passphrase-file")
        .arg(passphrase)
        .arg("--signer")
        .arg(signer)
        .arg("--config")
        .arg(config)
        .arg("--metrics-textfile")
        .arg(&metrics)
        .arg("--report")
        .arg(&report)
        .args(extra)
        .output()
        .expect("cutterctl drill");
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    let rec = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (out, rec)
}

/// Nothing a drill made is left: no `cutter_drill_…` database, no role.
fn nothing_left(world: &World) {
    assert_eq!(
        world.pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'cutter\\_drill\\_%'"
        ),
        "0"
    );
    assert_eq!(
        world.pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'cutter_drill'"
        ),
        "0"
    );
}

fn metric(world: &World, name: &str) -> Option<f64> {
    std::fs::read_to_string(world.work.path().join("drill.prom"))
        .expect("metrics")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
}

fn signer_file(world: &World, daemon: &Daemon) -> PathBuf {
    let path = world.work.path().join("pinned-signer.asc");
    let out = daemon.ctl(&["signer", "export"]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(&path, &out.stdout).expect("signer");
    path
}

#[test]
fn the_newest_local_backup_restores_and_failures_say_why() {
    let promtool = require("promtool");
    let (world, daemon, _, secret) = setup("");
    daemon.backup("r1");
    daemon.backup("r2");
    let signer = signer_file(&world, &daemon);
    let config = config_path(&daemon);
    let pp = world.gpg.passphrase_file().to_owned();

    let (out, rec) = drill(&world, &config, &secret, &pp, &signer, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(rec["verdict"], "PASS", "{rec}");
    assert_eq!(rec["run_id"], "r2", "the newest");
    let tables = rec["tables"].as_array().expect("tables");
    assert_eq!(tables.len(), 9, "{rec}");
    for t in tables {
        assert_eq!(t["restored"].as_i64(), t["manifest"].as_i64(), "{t}");
    }
    assert_eq!(rec["keys"].as_array().map(Vec::len), Some(1), "{rec}");
    nothing_left(&world);
    let prom = std::fs::read(world.work.path().join("drill.prom")).expect("metrics");
    check_metrics(&promtool, &prom);
    assert_eq!(metric(&world, "cutter_backup_drill_success"), Some(1.0));
    let passed_at =
        metric(&world, "cutter_backup_drill_last_success_timestamp_seconds").expect("last success");
    let report = std::fs::read_to_string(world.work.path().join("drill.md")).expect("report");
    assert!(
        report.contains("# Restore drill: PASS") && report.contains("`r2`"),
        "{report}"
    );

    // A wrong passphrase: FAIL, the reason in the JSON and the metrics.
    let wrong = world.work.path().join("wrong-pp");
    std::fs::write(&wrong, "not the passphrase\n").expect("pp");
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let (out, rec) = drill(&world, &config, &secret, &wrong, &signer, &["r2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(rec["verdict"], "FAIL");
    assert!(!rec["reason"].as_str().unwrap_or("").is_empty(), "{rec}");
    assert_eq!(metric(&world, "cutter_backup_drill_success"), Some(0.0));
    assert_eq!(rec["stage"], "decrypt", "{rec}");
    assert_eq!(
        metric(&world, "cutter_backup_drill_failed{stage=\"decrypt\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&world, "cutter_backup_drill_last_success_timestamp_seconds"),
        Some(passed_at),
        "a failure keeps the last success"
    );
    nothing_left(&world);

    // A table the manifest lists that the dump does not hold.
    let genuine = std::fs::read(world.backups.join("r2.sql.gpg")).expect("artifact");
    let model: serde_json::Value = serde_json::from_slice(
        &std::fs::read(world.backups.join("r2.manifest.json")).expect("manifest"),
    )
    .expect("json");
    let mut listed = model["tables"].clone();
    listed
        .as_array_mut()
        .expect("tables")
        .push(serde_json::json!({"table": "cutter_governance.gone", "rows": 5}));
    let bytes = plant(&world, "r2", "r3", &genuine, Some(listed));
    world.sign_as_daemon("r3", &bytes);
    let (out, rec) = drill(&world, &config, &secret, &pp, &signer, &["r3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(rec["verdict"], "FAIL");
    assert!(
        rec["reason"]
            .as_str()
            .unwrap_or("")
            .contains("cutter_governance.gone"),
        "{rec}"
    );
    assert_eq!(rec["stage"], "counts", "{rec}");
    assert_eq!(
        metric(&world, "cutter_backup_drill_failed{stage=\"counts\"}"),
        Some(1.0)
    );
    nothing_left(&world);

    // A corrupted artifact (the newest run, so the default pick).
    let path = world.backups.join("r3.sql.gpg");
    let mut bytes = std::fs::read(&path).expect("artifact");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, bytes).expect("corrupt");
    let (out, rec) = drill(&world, &config, &secret, &pp, &signer, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(rec["verdict"], "FAIL");
    assert_eq!(rec["run_id"], "r3", "{rec}");
    assert!(
        rec["reason"]
            .as_str()
            .unwrap_or("")
            .contains("verify FAILED"),
        "{rec}"
    );
    assert_eq!(rec["stage"], "verify", "{rec}");
    let prom = std::fs::read(world.work.path().join("drill.prom")).expect("metrics");
    check_metrics(&promtool, &prom);
    nothing_left(&world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_from_the_bucket_passes_after_the_host_lost_its_disk() {
    let s = crate::offsite::Setup::new(false, "required", "");
    let daemon = s.start();
    daemon.backup("r1");
    let signer = signer_file(&s.world, &daemon);
    let secret = s.world.work.path().join("offsite-secret.asc");
    drop(daemon);
    std::fs::remove_dir_all(&s.world.backups).expect("the host lost its disk");
    let config = s.world.work.path().join("backupd.toml");
    let pp = s.world.gpg.passphrase_file().to_owned();
    let (out, rec) = drill(
        &s.world,
        &config,
        &secret,
        &pp,
        &signer,
        &["--from-offsite"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(rec["verdict"], "PASS", "{rec}");
    assert_eq!(rec["run_id"], "r1");
    assert_eq!(rec["source"], "offsite");
    nothing_left(&s.world);
}
