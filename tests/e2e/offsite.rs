//! Offsite copies against a real SeaweedFS (started by the harness, never
//! mocked): the round trip and a restore after the host's backups and
//! signing key are gone, a corrupted or forged remote copy, required mode
//! with the server down and back, the async queue across a daemon restart,
//! wrong credentials, and Object Lock against prune (with pin's legal hold).

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::daemon::ctl;
use crate::harness::proc::{sha256sum, wait_until};
use crate::harness::s3::SECRET_KEY;
use crate::harness::{Daemon, DaemonConfig, Grants, KeyKind, SeaweedFs, World, text};

pub(crate) const BUCKET: &str = "cutter-offsite";
const HOST: &str = "db-host-1";

/// A world, a server with a bucket, and a daemon config pointing at it.
pub(crate) struct Setup {
    pub(crate) world: World,
    pub(crate) weed: SeaweedFs,
    pub(crate) cfg: DaemonConfig,
    secret: PathBuf,
}

impl Setup {
    pub(crate) fn new(lock: bool, mode: &str, offsite_extra: &str) -> Self {
        Self::with_secret(lock, mode, offsite_extra, SECRET_KEY)
    }

    fn with_secret(lock: bool, mode: &str, offsite_extra: &str, s3_secret: &str) -> Self {
        let world = World::new(Grants::All);
        let weed = SeaweedFs::start();
        weed.create_bucket(BUCKET, lock);
        let (fpr, cert) = world.key(KeyKind::Ed25519, "offsite");
        let secret = world.work.path().join("offsite-secret.asc");
        world.gpg.export_secret(&fpr, &secret);
        let creds = weed.credentials_file(world.work.path(), "s3-credentials", s3_secret);
        let mut cfg = world.config(Some(&fpr), Some(cert));
        cfg.tail = format!(
            "[offsite]\nurl = \"s3://{BUCKET}/backups\"\nendpoint = {:?}\npath_style = true\ncredentials_file = {:?}\nhost = \"{HOST}\"\nmode = \"{mode}\"\nqueue_dir = {:?}\nrequest_timeout_secs = 10\nmax_attempts = 2\n{offsite_extra}\n",
            weed.endpoint(),
            creds.display().to_string(),
            world
                .work
                .path()
                .join("offsite-queue")
                .display()
                .to_string(),
        );
        Self {
            world,
            weed,
            cfg,
            secret,
        }
    }

    pub(crate) fn start(&self) -> Daemon {
        self.world.start(&self.cfg)
    }

    pub(crate) fn config_path(&self) -> PathBuf {
        self.world.work.path().join("backupd.toml")
    }

    pub(crate) fn key(&self, name: &str) -> String {
        format!("backups/{HOST}/{name}")
    }

    /// `cutterctl args…` without a daemon (the socket is never used).
    pub(crate) fn ctl(&self, args: &[&str]) -> std::process::Output {
        ctl(&self.world.work.path().join("nobody.sock"), args)
    }

    pub(crate) fn restore_args(&self, run_id: &str, db: &str) -> Vec<String> {
        vec![
            "restore".into(),
            run_id.into(),
            "--from-offsite".into(),
            "--secret-key".into(),
            self.secret.display().to_string(),
            "--passphrase-file".into(),
            self.world.gpg.passphrase_file().display().to_string(),
            "--config".into(),
            self.config_path().display().to_string(),
            "--into".into(),
            self.world.pg.scratch_url(db),
        ]
    }
}

pub(crate) fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

pub(crate) async fn backup(
    d: &Daemon,
    run_id: &str,
) -> Result<cutter_backup::v1::BackupEnvelope, tonic::Status> {
    d.client()
        .await
        .pre_write_backup(cutter_backup::v1::PreWriteBackupRequest {
            run_id: run_id.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_then_restore_on_a_host_that_lost_its_disk() {
    let s = Setup::new(true, "required", "lock_days = 1");
    let mut daemon = s.start();
    let out = daemon.ctl(&["selftest"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}\n{}", daemon.log());
    assert!(
        t.lines()
            .any(|l| l.contains("offsite") && l.contains("PASS") && l.contains("Object Lock on")),
        "{t}"
    );

    let env = backup(&daemon, "r1").await.expect("backup");
    assert_eq!(
        env.offsite_ref,
        format!("s3://{BUCKET}/backups/{HOST}/r1.sql.gpg")
    );
    let keys = s.weed.keys(BUCKET, &format!("backups/{HOST}/"));
    for name in ["r1.sql.gpg", "r1.manifest.json", "r1.manifest.json.sig"] {
        assert!(keys.contains(&s.key(name)), "{name} missing in {keys:?}");
    }
    let remote = s.weed.get(BUCKET, &s.key("r1.sql.gpg"));
    let local = s.world.backups.join("r1.sql.gpg");
    assert_eq!(remote, std::fs::read(&local).expect("local artifact"));
    assert_eq!(sha256sum(&local), env.sha256);

    let listed = text(&daemon.ctl(&["list"]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("r1 ") && l.contains("both")),
        "{listed}"
    );
    let cfg = s.config_path().display().to_string();
    let all = text(&s.ctl(&["list", "--offsite", "--config", &cfg]));
    assert!(
        all.lines()
            .any(|l| l.contains(HOST) && l.contains("r1") && l.contains("complete")),
        "{all}"
    );
    let out = s.ctl(&["verify", "--offsite", "r1", "--config", &cfg]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("OK      r1"), "{}", text(&out));

    // The host is lost: no daemon, no backups, no signing key. Only the
    // config, the credentials, the pinned signer cert and the secret key.
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(20));
    std::fs::remove_dir_all(&s.world.backups).expect("rm -rf backups");
    std::fs::remove_dir_all(s.world.work.path().join("signer")).expect("rm -rf signer");
    let out = s.ctl(&refs(&s.restore_args("r1", "from_bucket")));
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("RESTORE: OK"), "{t}");
    assert_eq!(
        s.world.pg.count("from_bucket", "cutter_governance.cut_run"),
        5000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_or_forged_remote_copy_fails_verify_and_restore() {
    let s = Setup::new(false, "required", "");
    let daemon = s.start();
    backup(&daemon, "c1").await.expect("backup");
    let cfg = s.config_path().display().to_string();

    let mut bytes = s.weed.get(BUCKET, &s.key("c1.sql.gpg"));
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    s.weed.put(BUCKET, &s.key("c1.sql.gpg"), bytes.clone());
    let out = s.ctl(&["verify", "--offsite", "c1", "--config", &cfg]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("FAILED  c1") && t.contains("sha256"), "{t}");
    let out = s.ctl(&refs(&s.restore_args("c1", "from_corrupt")));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("nothing was restored"),
        "{}",
        text(&out)
    );
    assert!(!s.world.pg.db_exists("from_corrupt"));

    // Whoever can write the bucket rewrites the manifest to match: the
    // signature no longer does.
    let manifest = s.weed.get(BUCKET, &s.key("c1.manifest.json"));
    let mut m: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest json");
    let flipped = s.world.work.path().join("flipped");
    std::fs::write(&flipped, &bytes).expect("write");
    let forged_sha = sha256sum(&flipped);
    m["sha256"] = forged_sha.into();
    s.weed.put(
        BUCKET,
        &s.key("c1.manifest.json"),
        serde_json::to_vec_pretty(&m).expect("json"),
    );
    let out = s.ctl(&["verify", "--offsite", "--all", "--config", &cfg]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("FAILED  c1") && t.contains("signature"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mode_fails_while_the_server_is_down_and_a_retry_only_uploads() {
    let mut s = Setup::new(false, "required", "");
    let daemon = s.start();
    s.weed.stop();
    let err = backup(&daemon, "q1").await.expect_err("server down");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("offsite copy of q1 failed")
            && err.message().contains("local artifact is kept"),
        "{}",
        err.message()
    );
    assert!(!err.message().contains(SECRET_KEY));
    let local = s.world.backups.join("q1.sql.gpg");
    assert!(local.exists(), "{:?}", s.world.backup_files());
    let sha = sha256sum(&local);

    s.weed.start_again();
    let env = backup(&daemon, "q1")
        .await
        .expect("retry after the server is back");
    assert!(env.reused, "the retry must not take a new backup");
    assert_eq!(env.sha256, sha);
    assert_eq!(
        env.offsite_ref,
        format!("s3://{BUCKET}/backups/{HOST}/q1.sql.gpg")
    );
    assert_eq!(
        s.weed.get(BUCKET, &s.key("q1.sql.gpg")),
        std::fs::read(&local).expect("read")
    );
    assert!(!daemon.log().contains(SECRET_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_mode_queues_durably_across_a_restart_and_drains_when_the_server_returns() {
    let mut s = Setup::new(false, "async", "retry_max_secs = 1");
    s.weed.stop();
    let daemon = s.start();
    let env = backup(&daemon, "a1")
        .await
        .expect("async mode backs up at once");
    assert!(env.offsite_ref.is_empty());
    let status = text(&daemon.ctl(&["status"]));
    assert!(
        status.contains("mode async, 1 upload(s) pending"),
        "{status}"
    );
    let listed = text(&daemon.ctl(&["list"]));
    assert!(listed.contains("upload pending"), "{listed}");
    let metrics = text(&daemon.ctl(&["metrics"]));
    assert!(
        metrics.contains("cutter_backup_offsite_pending 1"),
        "{metrics}"
    );
    let queue = s.world.work.path().join("offsite-queue");
    assert!(queue.join("a1").exists());

    drop(daemon);
    let daemon = s.start();
    let status = text(&daemon.ctl(&["status"]));
    assert!(status.contains("1 upload(s) pending"), "{status}");

    s.weed.start_again();
    let artifact = s.key("a1.manifest.json");
    wait_until(
        Duration::from_secs(90),
        || s.weed.keys(BUCKET, "backups/").contains(&artifact),
        || format!("the queue did not drain:\n{}", daemon.log()),
    );
    wait_until(
        Duration::from_secs(10),
        || !queue.join("a1").exists(),
        || "the queue entry stayed".into(),
    );
    let listed = text(&daemon.ctl(&["list"]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("a1 ") && l.contains("both")),
        "{listed}"
    );
    let cfg = s.config_path().display().to_string();
    let out = s.ctl(&["verify", "--offsite", "a1", "--config", &cfg]);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_selftest_naming_the_file() {
    let s = Setup::with_secret(false, "required", "", "not-the-secret");
    let daemon = s.start();
    let out = daemon.ctl(&["selftest"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let line = t
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("offsite"))
        .unwrap_or_else(|| panic!("no offsite check:\n{t}"));
    assert!(line.contains("FAIL"), "{line}");
    assert!(
        line.contains("offsite.credentials_file") || line.contains("s3-credentials"),
        "{line}"
    );
    assert!(!t.contains("not-the-secret") && !daemon.log().contains("not-the-secret"));
    // The local backup is still taken; the call fails and says why.
    let err = backup(&daemon, "w1")
        .await
        .expect_err("credentials rejected");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(s.world.backups.join("w1.sql.gpg").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_copies_resist_prune_and_pin_places_a_legal_hold() {
    let mut s = Setup::new(
        true,
        "required",
        "lock_days = 1\nlock_mode = \"governance\"\nprune = true",
    );
    s.cfg
        .tail
        .push_str("\n[retention]\nkeep_last = 1\nkeep_days = 0\n");
    let daemon = s.start();
    for id in ["p1", "p2", "p3"] {
        backup(&daemon, id).await.expect("backup");
    }
    let out = daemon.ctl(&["pin", "p2", "--note", "incident"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.weed.legal_hold(BUCKET, &s.key("p2.sql.gpg")), "ON");

    let out = daemon.ctl(&["prune", "--confirm"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // Which run is oldest depends on the second each finished in; the
    // pinned one is never pruned.
    let pruned: Vec<&str> = t
        .lines()
        .filter(|l| l.starts_with("DELETED"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(!pruned.is_empty() && !pruned.contains(&"p2"), "{t}");
    let listed = text(&daemon.ctl(&["list"]));
    let keys = s.weed.keys(BUCKET, &format!("backups/{HOST}/"));
    for id in &pruned {
        assert!(
            t.lines()
                .any(|l| l.contains(id) && l.contains("offsite copy kept: locked until")),
            "{t}"
        );
        assert!(
            !s.world.backups.join(format!("{id}.sql.gpg")).exists(),
            "{t}"
        );
        for suffix in [".sql.gpg", ".manifest.json", ".manifest.json.sig"] {
            let name = format!("{id}{suffix}");
            assert!(keys.contains(&s.key(&name)), "{name} was deleted: {keys:?}");
        }
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(&format!("{id} ")) && l.contains("remote")),
            "{listed}"
        );
    }
}

#[tokio::test]
async fn a_local_run_swapped_while_queued_is_never_uploaded() {
    let mut s = Setup::new(false, "async", "retry_max_secs = 1");
    s.weed.stop();
    let daemon = s.start();
    backup(&daemon, "swapped").await.expect("queued");
    // Someone who can write the backups directory swaps the run for a
    // self-consistent forgery: junk bytes, a manifest that matches them,
    // and a signature that is not the daemon's.
    let dir = &s.world.backups;
    let artifact = dir.join("swapped.sql.gpg");
    std::fs::write(&artifact, b"not the backup").expect("forge artifact");
    let manifest = dir.join("swapped.manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).expect("manifest")).expect("json");
    m["sha256"] = sha256sum(&artifact).into();
    m["size_bytes"] = 14.into();
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).expect("json")).expect("forge");
    std::fs::write(dir.join("swapped.manifest.json.sig"), b"junk").expect("forge sig");

    s.weed.start_again();
    wait_until(
        Duration::from_secs(60),
        || daemon.log().contains("not this daemon's"),
        || format!("the uploader never refused the forgery:\n{}", daemon.log()),
    );
    let keys = s.weed.keys(BUCKET, "backups/");
    assert!(
        !keys.iter().any(|k| k.contains("swapped")),
        "a forged run reached the bucket: {keys:?}"
    );
    let status = text(&daemon.ctl(&["status"]));
    assert!(status.contains("1 upload(s) pending"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_overwritten_in_a_versioned_bucket_still_restores_from_its_genuine_version() {
    let s = Setup::new(
        true,
        "required",
        "lock_days = 1\nlock_mode = \"governance\"",
    );
    let daemon = s.start();
    let env = backup(&daemon, "v1").await.expect("backup");
    let cfg = s.config_path().display().to_string();
    // The envelope names the object version HEAD confirmed.
    assert_eq!(
        s.weed.versions(BUCKET, &s.key("v1.sql.gpg")),
        vec![env.offsite_version.clone()],
        "the envelope's offsite_version"
    );

    // The host's own write-only key can still PUT: the intruder writes junk
    // over all three objects. Object Lock keeps the genuine versions below.
    for name in ["v1.sql.gpg", "v1.manifest.json", "v1.manifest.json.sig"] {
        s.weed.put(BUCKET, &s.key(name), b"ransom note".to_vec());
        assert_eq!(s.weed.versions(BUCKET, &s.key(name)).len(), 2, "{name}");
    }
    assert_eq!(s.weed.get(BUCKET, &s.key("v1.sql.gpg")), b"ransom note");
    // An oversized "signature" (our cap is 4 KiB) on top: passed over, not
    // the end of the walk.
    s.weed.put(
        BUCKET,
        &s.key("v1.manifest.json.sig"),
        vec![0xa5; 300 * 1024],
    );

    let out = s.ctl(&["verify", "--offsite", "v1", "--config", &cfg]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("OK      v1 (WARNING:") && t.contains("someone wrote over this run"),
        "{t}"
    );

    // The envelope's version is fetched as it is: no walk, no warning.
    let out = s.ctl(&[
        "verify",
        "--offsite",
        "v1",
        "--version",
        &env.offsite_version,
        "--config",
        &cfg,
    ]);
    let t = text(&out);
    assert!(
        out.status.success() && !t.contains("the genuine artifact is an older version"),
        "{t}"
    );
    // The junk's version is named: it does not authenticate.
    let junk = s
        .weed
        .versions(BUCKET, &s.key("v1.sql.gpg"))
        .into_iter()
        .find(|v| *v != env.offsite_version)
        .expect("the junk's version");
    let out = s.ctl(&[
        "verify",
        "--offsite",
        "v1",
        "--version",
        &junk,
        "--config",
        &cfg,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAILED"), "{}", text(&out));

    // A pin holds every version, the genuine one under the junk included.
    let out = daemon.ctl(&["pin", "v1", "--note", "incident"]);
    assert!(out.status.success(), "{}", text(&out));
    for name in ["v1.sql.gpg", "v1.manifest.json", "v1.manifest.json.sig"] {
        for v in s.weed.versions(BUCKET, &s.key(name)) {
            assert_eq!(
                s.weed.legal_hold_of(BUCKET, &s.key(name), Some(&v)),
                "ON",
                "{name} version {v}"
            );
        }
    }

    std::fs::remove_dir_all(&s.world.backups).expect("rm -rf backups");
    let mut args = s.restore_args("v1", "from_version");
    args.extend(["--version".to_owned(), env.offsite_version.clone()]);
    let out = s.ctl(&refs(&args));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        s.world
            .pg
            .count("from_version", "cutter_governance.cut_run"),
        5000
    );
    let out = s.ctl(&refs(&s.restore_args("v1", "from_genuine")));
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("RESTORE: OK"), "{t}");
    assert!(
        t.contains(&env.sha256),
        "the restore names what it loaded: {t}"
    );
    assert!(
        t.contains("WARNING: the genuine artifact is an older version"),
        "{t}"
    );
    assert_eq!(
        s.world
            .pg
            .count("from_genuine", "cutter_governance.cut_run"),
        5000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_moved_under_another_hosts_prefix_is_refused() {
    let s = Setup::new(false, "required", "");
    let daemon = s.start();
    backup(&daemon, "h1").await.expect("backup");
    let cfg = s.config_path().display().to_string();
    // A bucket writer copies db-host-1's run under db-host-2/, where a
    // restore for db-host-2 (whose signer is pinned too) would find it.
    for name in ["h1.sql.gpg", "h1.manifest.json", "h1.manifest.json.sig"] {
        let bytes = s.weed.get(BUCKET, &s.key(name));
        s.weed
            .put(BUCKET, &format!("backups/db-host-2/{name}"), bytes);
    }
    let out = s.ctl(&[
        "verify",
        "--offsite",
        "h1",
        "--host",
        "db-host-2",
        "--config",
        &cfg,
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("FAILED  h1") && t.contains(&format!("made on host \"{HOST}\"")),
        "{t}"
    );
    let out = s.ctl(&["verify", "--offsite", "h1", "--config", &cfg]);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_replaces_a_planted_manifest_instead_of_trusting_its_name() {
    let s = Setup::new(false, "required", "");
    let daemon = s.start();
    let first = backup(&daemon, "m1").await.expect("backup");
    let cfg = s.config_path().display().to_string();
    // The artifact is genuine; its manifest and signature are junk (an
    // upload cut short, then a bucket writer filling the gap).
    s.weed
        .put(BUCKET, &s.key("m1.manifest.json"), b"{}".to_vec());
    s.weed
        .put(BUCKET, &s.key("m1.manifest.json.sig"), b"junk".to_vec());
    let out = s.ctl(&["verify", "--offsite", "m1", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let again = backup(&daemon, "m1").await.expect("retry");
    assert_eq!(again.sha256, first.sha256);
    let out = s.ctl(&["verify", "--offsite", "m1", "--config", &cfg]);
    assert!(
        out.status.success(),
        "the retry left the junk: {}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_streams_from_the_file_and_verifies() {
    let mut s = Setup::new(true, "required", "part_size_mib = 5\nlock_days = 1");
    let table = s.world.add_table("offsite_big", 12);
    s.cfg.tables.push(table);
    s.cfg.extra.push_str("compression = \"none\"\n");
    let daemon = s.start();
    let env = backup(&daemon, "big1").await.expect("backup");
    let local = std::fs::read(s.world.backups.join("big1.sql.gpg")).expect("local artifact");
    assert!(
        local.len() > 10 << 20,
        "{} bytes: not multipart",
        local.len()
    );
    // Three 5 MiB parts (the last one short), each with its sha256; the
    // object is the file, byte for byte.
    assert!(
        daemon.log().contains("offsite copy confirmed run_id=big1"),
        "{}",
        daemon.log()
    );
    let key = s.key("big1.sql.gpg");
    assert_eq!(s.weed.get(BUCKET, &key), local);
    // Uploaded in part_size_mib = 5 parts: what the server lists, and the
    // `-<parts>` suffix of HEAD's ETag and composite SHA-256 checksum.
    let part = 5 << 20;
    let want: Vec<i64> = local
        .chunks(part)
        .map(|c| i64::try_from(c.len()).expect("size"))
        .collect();
    assert!(want.len() >= 3, "{want:?}");
    let sizes = s.weed.part_sizes(BUCKET, &key);
    assert_eq!(
        sizes,
        want,
        "the object's parts: not {} parts of 5 MiB",
        want.len()
    );
    let (etag, checksum) = s.weed.head_sums(BUCKET, &key);
    let suffix = format!("-{}", want.len());
    assert!(
        etag.ends_with(&suffix) && checksum.ends_with(&suffix),
        "ETag {etag:?}, checksum {checksum:?}: not a {}-part upload",
        want.len()
    );
    let cfg = s.config_path().display().to_string();
    let out = s.ctl(&[
        "verify",
        "--offsite",
        "big1",
        "--expect-sha256",
        &env.sha256,
        "--config",
        &cfg,
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_signed_manifests_for_one_run_need_the_envelopes_sha256() {
    // Two genuine, different runs under one id: what an intruder holding
    // the signing key could also write. Newest-wins would restore theirs.
    let s = Setup::new(true, "required", "");
    let daemon = s.start();
    let first = backup(&daemon, "d1").await.expect("backup");
    for suffix in [".sql.gpg", ".manifest.json", ".manifest.json.sig"] {
        std::fs::remove_file(s.world.backups.join(format!("d1{suffix}"))).expect("rm local run");
    }
    let second = backup(&daemon, "d1").await.expect("second backup");
    assert_ne!(first.sha256, second.sha256);
    let cfg = s.config_path().display().to_string();

    let out = s.ctl(&["verify", "--offsite", "d1", "--config", &cfg]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("2 different signed manifests") && t.contains("--expect-sha256"),
        "{t}"
    );
    for env in [&first, &second] {
        let out = s.ctl(&[
            "verify",
            "--offsite",
            "d1",
            "--expect-sha256",
            &env.sha256,
            "--config",
            &cfg,
        ]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let mut args = s.restore_args("d1", "from_first");
    args.extend(["--expect-sha256".to_owned(), first.sha256.clone()]);
    let out = s.ctl(&refs(&args));
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains(&first.sha256), "{t}");
}
