//! The operator toolkit against real PostgreSQL and GnuPG: verify, list,
//! prune, pin, restore, key rotation.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::harness::{Daemon, Grants, KeyKind, World, text};

fn backup(daemon: &Daemon, run_id: &str) {
    daemon.backup(run_id);
}

/// A world with a passing daemon and the key's secret half exported.
fn setup() -> (World, Daemon, String, PathBuf) {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "ops");
    let secret = world.work.path().join("ops-secret.asc");
    world.gpg.export_secret(&fpr, &secret);
    let daemon = world.start(&world.config(Some(&fpr), Some(cert)));
    (world, daemon, fpr, secret)
}

fn restore_args<'a>(
    world: &'a World,
    daemon: &Daemon,
    run_id: &'a str,
    secret: &'a Path,
) -> Vec<String> {
    let config = daemon.socket.with_file_name("backupd.toml");
    vec![
        "restore".into(),
        run_id.into(),
        "--secret-key".into(),
        secret.display().to_string(),
        "--passphrase-file".into(),
        world.gpg.passphrase_file().display().to_string(),
        "--config".into(),
        config.display().to_string(),
    ]
}

fn ctl_owned(daemon: &Daemon, args: &[String]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    daemon.ctl(&refs)
}

#[test]
fn verify_list_and_a_flipped_byte() {
    let (world, daemon, fpr, secret) = setup();
    backup(&daemon, "good");
    backup(&daemon, "flipped");
    let out = daemon.ctl(&["verify", "--all"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("OK      good") && text(&out).contains("OK      flipped"));

    let artifact = world.backups.join("flipped.sql.gpg");
    let original = std::fs::read(&artifact).expect("read");
    let mut bytes = original.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&artifact, bytes).expect("write");
    let out = daemon.ctl(&["verify", "flipped"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAILED  flipped"), "{}", text(&out));
    assert!(
        text(&out).contains(&artifact.display().to_string()),
        "names the artifact: {}",
        text(&out)
    );
    let out = daemon.ctl(&["verify", "--all"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("OK      good"));

    // Restore refuses before loading anything: the scratch database is not even created.
    let mut args = restore_args(&world, &daemon, "flipped", &secret);
    args.extend(["--into".into(), world.pg.scratch_url("from_flipped")]);
    let out = ctl_owned(&daemon, &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("verify FAILED"), "{}", text(&out));
    assert!(!world.pg.db_exists("from_flipped"));

    let out = daemon.ctl(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let good = v["artifacts"]
        .as_array()
        .expect("array")
        .iter()
        .find(|a| a["run_id"] == "good")
        .expect("good listed");
    assert_eq!(good["state"], "complete");
    assert_eq!(good["artifact_state"], "complete");
    assert_eq!(good["key_fprs"][0], fpr.as_str());
    assert!(good["total_rows"].as_u64().unwrap_or(0) > 5000);
    let out = daemon.ctl(&["list"]);
    assert!(
        text(&out).contains(&format!("…{}", &fpr[32..])),
        "list shows the key each needs"
    );

    // The flipped run keeps its size, yet list shows it corrupt from the
    // failed verify on, until a verify passes again.
    let state_of = |run: &str| {
        let out = daemon.ctl(&["list", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v["artifacts"]
            .as_array()
            .expect("array")
            .iter()
            .find(|a| a["run_id"] == run)
            .map(|a| (a["artifact_state"].clone(), a["detail"].clone()))
            .expect("listed")
    };
    let (state, detail) = state_of("flipped");
    assert_eq!(state, "corrupt", "{detail}");
    assert!(
        detail.as_str().unwrap_or("").contains("last verify FAILED"),
        "{detail}"
    );
    std::fs::write(&artifact, &original).expect("put the bytes back");
    let out = daemon.ctl(&["verify", "flipped"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(state_of("flipped").0, "complete");
}

#[test]
fn truncated_artifact_and_missing_manifest() {
    let (world, daemon, _, _) = setup();
    backup(&daemon, "cut");
    backup(&daemon, "lonely");
    let artifact = world.backups.join("cut.sql.gpg");
    let len = std::fs::metadata(&artifact).expect("stat").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&artifact)
        .and_then(|f| f.set_len(len / 2))
        .expect("truncate");
    let out = daemon.ctl(&["verify", "cut"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("truncated"), "{}", text(&out));

    std::fs::remove_file(world.backups.join("lonely.manifest.json")).expect("rm manifest");
    let out = daemon.ctl(&["verify", "lonely"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no manifest"), "{}", text(&out));
    let out = daemon.ctl(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let states: Vec<(String, String)> = v["artifacts"]
        .as_array()
        .expect("array")
        .iter()
        .map(|a| {
            (
                a["run_id"].as_str().unwrap_or("").to_owned(),
                a["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        states.contains(&("lonely".into(), "orphan".into())),
        "{states:?}"
    );
    assert!(
        states.contains(&("cut".into(), "corrupt".into())),
        "{states:?}"
    );
}

/// Makes a backup look `days` old by editing its manifest (not the
/// artifact) and signing it again with the daemon's key: what the daemon
/// would have written on that day.
pub(crate) fn age(world: &World, run_id: &str, created_at: &str) {
    let path = world.backups.join(format!("{run_id}.manifest.json"));
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    m["created_at"] = created_at.into();
    let bytes = serde_json::to_vec_pretty(&m).expect("json");
    std::fs::write(&path, &bytes).expect("write");
    world.sign_as_daemon(run_id, &bytes);
}

#[test]
fn prune_dry_run_changes_nothing_and_confirm_respects_pins() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.tail = "[retention]\nkeep_last = 1\nkeep_days = 7\n".into();
    let daemon = world.start(&cfg);
    for id in ["old-1", "old-2", "old-3", "recent", "newest"] {
        backup(&daemon, id);
    }
    age(&world, "old-1", "2026-01-01T00:00:00Z");
    age(&world, "old-2", "2026-01-02T00:00:00Z");
    age(&world, "old-3", "2026-01-03T00:00:00Z");
    age(&world, "newest", "2099-01-01T00:00:00Z");
    assert!(
        daemon
            .ctl(&["pin", "old-2", "--note", "incident 42"])
            .status
            .success()
    );

    let before = world.backup_files();
    let out = daemon.ctl(&["prune"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(world.backup_files(), before, "a dry run changes nothing");
    let t = text(&out);
    assert!(
        t.contains("DELETE?  old-1") && t.contains("DELETE?  old-3"),
        "{t}"
    );
    assert!(t.contains("would delete 2 backup(s)"), "{t}");

    let out = daemon.ctl(&["prune", "--confirm", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["applied"], true);
    let files = world.backup_files();
    for gone in ["old-1", "old-3"] {
        assert!(
            !files.iter().any(|f| f.starts_with(gone)),
            "{gone} deleted: {files:?}"
        );
    }
    for kept in ["old-2.sql.gpg", "recent.sql.gpg", "newest.sql.gpg"] {
        assert!(files.iter().any(|f| f == kept), "{kept} kept: {files:?}");
    }
    let reasons: Vec<String> = v["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|d| {
            assert_eq!(d["action"], d["prune_action"], "{d}");
            format!("{} {} {}", d["run_id"], d["prune_action"], d["reason"])
        })
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("newest") && r.contains("never pruned")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("old-2") && r.contains("pinned")),
        "{reasons:?}"
    );

    assert!(daemon.ctl(&["unpin", "old-2"]).status.success());
    let out = daemon.ctl(&["prune", "--confirm"]);
    assert!(out.status.success());
    assert!(!world.backup_files().iter().any(|f| f.starts_with("old-2")));
}

#[test]
fn the_newest_backup_survives_even_when_old_and_keep_last_is_one() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.tail = "[retention]\nkeep_last = 1\nkeep_days = 0\n".into();
    let daemon = world.start(&cfg);
    backup(&daemon, "only");
    age(&world, "only", "2020-01-01T00:00:00Z");
    assert!(daemon.ctl(&["prune", "--confirm"]).status.success());
    assert_eq!(
        world.backup_files(),
        [
            "only.manifest.json",
            "only.manifest.json.sig",
            "only.sql.gpg"
        ]
    );
}

#[test]
fn restore_round_trip_live_refusal_and_non_empty_target() {
    let (world, daemon, _, secret) = setup();
    backup(&daemon, "r1");
    // Restore works without the daemon.
    let mut daemon = daemon;
    daemon.signal("TERM");
    assert!(
        daemon
            .wait_exit(std::time::Duration::from_secs(10))
            .success()
    );

    let mut live = restore_args(&world, &daemon, "r1", &secret);
    live.extend([
        "--into".into(),
        format!("postgres://postgres@localhost:{}/directus", world.pg.port),
    ]);
    let out = ctl_owned(&daemon, &live);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("live database"), "{}", text(&out));

    let mut args = restore_args(&world, &daemon, "r1", &secret);
    args.extend(["--into".into(), world.pg.scratch_url("restored_r1")]);
    let out = ctl_owned(&daemon, &args);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("RESTORE: OK"), "{t}");
    assert!(
        t.contains("cutter_governance.cut_run") && t.contains("5000"),
        "{t}"
    );
    assert_eq!(
        world.pg.count("restored_r1", "cutter_governance.cut_run"),
        5000
    );

    // The same target again is not empty any more: refused, nothing loaded twice.
    let out = ctl_owned(&daemon, &args);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not empty"), "{}", text(&out));
    assert_eq!(
        world.pg.count("restored_r1", "cutter_governance.cut_run"),
        5000
    );

    let plain = world.work.path().join("r1.sql");
    let mut to_file = restore_args(&world, &daemon, "r1", &secret);
    to_file.extend(["--to-file".into(), plain.display().to_string()]);
    let out = ctl_owned(&daemon, &to_file);
    assert!(out.status.success(), "{}", text(&out));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&plain)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(&plain)
            .expect("sql")
            .contains("COPY cutter_governance.cut_run")
    );
}

#[test]
fn key_rotation_every_artifact_names_and_opens_with_its_key() {
    let world = World::new(Grants::All);
    let (fpr_a, cert_a) = world.key(KeyKind::Ed25519, "key-a");
    let (fpr_b, cert_b) = world.key(KeyKind::Rsa4096, "key-b");
    let secret_a = world.work.path().join("a-secret.asc");
    let secret_b = world.work.path().join("b-secret.asc");
    world.gpg.export_secret(&fpr_a, &secret_a);
    world.gpg.export_secret(&fpr_b, &secret_b);
    // One keyring file holding both certs, as an operator would keep it.
    let both = world.work.path().join("both.asc");
    let joined = format!(
        "{}{}",
        std::fs::read_to_string(&cert_a).expect("a"),
        std::fs::read_to_string(&cert_b).expect("b")
    );
    std::fs::write(&both, joined).expect("write");

    let daemon = world.start(&world.config(Some(&fpr_a), Some(both.clone())));
    backup(&daemon, "with-a");
    drop(daemon);

    // Transition: B is the key, A still receives copies.
    let mut cfg = world.config(Some(&fpr_b), Some(both.clone()));
    cfg.tail = format!("[[key.additional_recipients]]\nfingerprint = \"{fpr_a}\"\n");
    let daemon = world.start(&cfg);
    backup(&daemon, "with-b-and-a");
    drop(daemon);

    let daemon = world.start(&world.config(Some(&fpr_b), Some(both)));
    backup(&daemon, "with-b");

    let out = daemon.ctl(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let keys = |id: &str| -> Vec<String> {
        v["artifacts"]
            .as_array()
            .expect("array")
            .iter()
            .find(|a| a["run_id"] == id)
            .map(|a| {
                a["key_fprs"]
                    .as_array()
                    .expect("fprs")
                    .iter()
                    .map(|f| f.as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .expect("listed")
    };
    assert_eq!(keys("with-a"), std::slice::from_ref(&fpr_a));
    assert_eq!(keys("with-b-and-a"), [fpr_b.clone(), fpr_a.clone()]);
    assert_eq!(keys("with-b"), std::slice::from_ref(&fpr_b));
    assert!(daemon.ctl(&["verify", "--all"]).status.success());

    let opens = |run_id: &str, secret: &Path| -> bool {
        let out_file = world.work.path().join(format!(
            "{run_id}-{}.sql",
            secret.file_stem().and_then(|s| s.to_str()).unwrap_or("x")
        ));
        let mut args = restore_args(&world, &daemon, run_id, secret);
        args.extend(["--to-file".into(), out_file.display().to_string()]);
        ctl_owned(&daemon, &args).status.success()
    };
    assert!(opens("with-a", &secret_a));
    assert!(!opens("with-a", &secret_b), "B cannot open A's artifact");
    assert!(opens("with-b", &secret_b));
    assert!(!opens("with-b", &secret_a), "A cannot open B's artifact");
    assert!(opens("with-b-and-a", &secret_a));
    assert!(opens("with-b-and-a", &secret_b));
}
