//! The threat model, tested: someone who can write the backups directory
//! (a compromised daemon user, a group member, a file copied back) or set
//! the operator's environment must not be able to make a backup call return
//! junk as COMPLETE, make prune delete outside the directory, or make a
//! restore do anything but load data into a scratch database. Each test
//! names the attack; docs/security.md maps them to the threats.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cutter_backup::v1::PreWriteBackupRequest;

use crate::harness::proc::workspace_bin;
use crate::harness::tls::{Ca, Mitm};
use crate::harness::{Daemon, Grants, KeyKind, World, text};

pub(crate) fn backup(daemon: &Daemon, run_id: &str) {
    daemon.backup(run_id);
}

/// A passing daemon, its key's secret half exported (0600).
pub(crate) fn setup(tail: &str) -> (World, Daemon, String, PathBuf) {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "ops");
    let secret = world.work.path().join("ops-secret.asc");
    world.gpg.export_secret(&fpr, &secret);
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.tail = tail.into();
    let daemon = world.start(&cfg);
    (world, daemon, fpr, secret)
}

pub(crate) fn config_path(daemon: &Daemon) -> PathBuf {
    daemon.socket.with_file_name("backupd.toml")
}

/// `cutterctl restore RUN --into URL …` with the harness's pinned signer.
pub(crate) fn restore(
    world: &World,
    daemon: &Daemon,
    run_id: &str,
    secret: &Path,
    into: &str,
) -> Command {
    let mut c = Command::new(workspace_bin("cutterctl"));
    c.arg("restore")
        .arg(run_id)
        .arg("--secret-key")
        .arg(secret)
        .arg("--passphrase-file")
        .arg(world.gpg.passphrase_file())
        .arg("--config")
        .arg(config_path(daemon))
        .args(["--into", into])
        .stdin(Stdio::null());
    c
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(bytes)?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("hash")
        .to_owned()
}

/// Plants `<run_id>.sql.gpg` with `artifact` and a manifest made from a real
/// run's (`model`), naming `run_id` and the planted bytes; `tables` replaces
/// the table list when given. Returns the manifest bytes (unsigned).
pub(crate) fn plant(
    world: &World,
    model: &str,
    run_id: &str,
    artifact: &[u8],
    tables: Option<serde_json::Value>,
) -> Vec<u8> {
    let mut m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(world.backups.join(format!("{model}.manifest.json"))).expect("model"),
    )
    .expect("json");
    m["run_id"] = run_id.into();
    m["artifact"] = format!("{run_id}.sql.gpg").into();
    m["sha256"] = sha256_hex(artifact).into();
    m["size_bytes"] = artifact.len().into();
    if let Some(t) = tables {
        m["tables"] = t;
    }
    let bytes = serde_json::to_vec_pretty(&m).expect("json");
    std::fs::write(world.backups.join(format!("{run_id}.sql.gpg")), artifact).expect("artifact");
    std::fs::write(
        world.backups.join(format!("{run_id}.manifest.json")),
        &bytes,
    )
    .expect("manifest");
    bytes
}

/// `sql` encrypted with stock gpg to `fpr` (what anyone with the public key can make).
pub(crate) fn gpg_encrypt(world: &World, fpr: &str, sql: &[u8]) -> Vec<u8> {
    let plain = world.work.path().join("forged.sql");
    let out = world.work.path().join("forged.sql.gpg");
    std::fs::write(&plain, sql).expect("plain");
    let _ = std::fs::remove_file(&out);
    let o = world
        .gpg
        .cmd()
        .args([
            "--trust-model",
            "always",
            "--encrypt",
            "--recipient",
            fpr,
            "--output",
        ])
        .arg(&out)
        .arg(&plain)
        .output()
        .expect("gpg");
    assert!(o.status.success(), "{}", text(&o));
    std::fs::read(&out).expect("encrypted")
}

#[test]
fn restore_refuses_an_unsigned_or_forged_manifest() {
    let (world, daemon, fpr, secret) = setup("");
    backup(&daemon, "real");
    let marker = world.work.path().join("pwned");
    let sql = format!("\\! touch {}\nSELECT 1;\n", marker.display());
    let artifact = gpg_encrypt(&world, &fpr, sql.as_bytes());

    // Unsigned: verify and restore both refuse, naming the missing signature.
    plant(
        &world,
        "real",
        "unsigned",
        &artifact,
        Some(serde_json::json!([])),
    );
    let out = daemon.ctl(&["verify", "unsigned"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("unsigned"), "{}", text(&out));
    let out = restore(
        &world,
        &daemon,
        "unsigned",
        &secret,
        &world.pg.scratch_url("s_unsigned"),
    )
    .output()
    .expect("restore");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("verify FAILED"), "{}", text(&out));

    // Signed by another key (a forger's own "signer"): refused the same way.
    let forger_dir = tempfile::tempdir().expect("tempdir");
    let forger = cutter_core::signer::Signer::load_or_create(
        &forger_dir.path().join("k.asc"),
        &world.backups,
    )
    .expect("forger key");
    let bytes = plant(
        &world,
        "real",
        "forged",
        &artifact,
        Some(serde_json::json!([])),
    );
    std::fs::write(
        world.backups.join("forged.manifest.json.sig"),
        forger.sign(&bytes).expect("sign"),
    )
    .expect("sig");
    let out = daemon.ctl(&["verify", "forged"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("signature"), "{}", text(&out));
    let out = restore(
        &world,
        &daemon,
        "forged",
        &secret,
        &world.pg.scratch_url("s_forged"),
    )
    .output()
    .expect("restore");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!world.pg.db_exists("s_forged") && !world.pg.db_exists("s_unsigned"));
    assert!(!marker.exists(), "the forged SQL ran");

    // The round trip with an explicitly pinned cert: the daemon's own passes,
    // the forger's cert makes the genuine run fail.
    let mine = world.work.path().join("exported-signer.asc");
    let out = daemon.ctl(&["signer", "export"]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(&mine, &out.stdout).expect("save cert");
    let theirs = forger_dir.path().join("forger.asc");
    std::fs::write(&theirs, forger.public_armored().expect("armor")).expect("save");
    let ok = daemon.ctl(&["verify", "real", "--signer", &mine.display().to_string()]);
    assert!(ok.status.success(), "{}", text(&ok));
    let bad = daemon.ctl(&["verify", "real", "--signer", &theirs.display().to_string()]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    let out = restore(
        &world,
        &daemon,
        "real",
        &secret,
        &world.pg.scratch_url("s_theirs"),
    )
    .arg("--signer")
    .arg(&theirs)
    .output()
    .expect("restore");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!world.pg.db_exists("s_theirs"));
    let out = restore(
        &world,
        &daemon,
        "real",
        &secret,
        &world.pg.scratch_url("s_mine"),
    )
    .arg("--signer")
    .arg(&mine)
    .output()
    .expect("restore");
    assert!(out.status.success(), "{}", text(&out));

    // The orchestrator's recorded sha256 is a second anchor.
    let wrong = "0".repeat(64);
    let out = daemon.ctl(&["verify", "real", "--expect-sha256", &wrong]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("recorded envelope"), "{}", text(&out));
}

#[test]
fn restore_refuses_meta_commands() {
    let (world, daemon, fpr, secret) = setup("");
    backup(&daemon, "real");
    // Even with the daemon's own signing key (stolen), the stream cannot run
    // psql meta-commands, nor anything a non-superuser may not do.
    // The marker's directory is writable by root (psql's `\!` runs as
    // cutterctl's user) and by the postgres OS user (the server runs COPY …
    // PROGRAM), so it appears if either command ran: a superuser's COPY
    // shows it can.
    let drop_box = tempfile::Builder::new()
        .prefix("cutter-marker-")
        .tempdir()
        .expect("marker tempdir");
    std::fs::set_permissions(drop_box.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod marker dir");
    let probe = drop_box.path().join("probe");
    world.pg.psql(
        "postgres",
        &format!("COPY (SELECT 1) TO PROGRAM 'touch {}'", probe.display()),
    );
    assert!(
        probe.exists(),
        "the server cannot write {}",
        probe.display()
    );
    let marker = drop_box.path().join("pwned");
    let mut tried = 0;
    for (run_id, sql, why) in [
        (
            "shell",
            format!("\\! touch {}\n", marker.display()),
            "backslash commands are restricted",
        ),
        (
            "program",
            format!("COPY (SELECT 1) TO PROGRAM 'touch {}';\n", marker.display()),
            "pg_execute_server_program",
        ),
    ] {
        let artifact = gpg_encrypt(&world, &fpr, sql.as_bytes());
        let bytes = plant(
            &world,
            "real",
            run_id,
            &artifact,
            Some(serde_json::json!([])),
        );
        world.sign_as_daemon(run_id, &bytes);
        let verify = daemon.ctl(&["verify", run_id]);
        assert!(
            verify.status.success(),
            "the stolen key signs: {}",
            text(&verify)
        );
        let out = restore(
            &world,
            &daemon,
            run_id,
            &secret,
            &world.pg.scratch_url(&format!("s_{run_id}")),
        )
        .output()
        .expect("restore");
        assert!(
            !marker.exists(),
            "{run_id}: the planted command ran: {}",
            text(&out)
        );
        assert_eq!(out.status.code(), Some(1), "{run_id}: {}", text(&out));
        assert!(text(&out).contains(why), "{run_id}: {}", text(&out));
        tried += 1;
    }
    assert_eq!(tried, 2, "both planted commands were tried");
}

#[test]
fn restore_is_not_steered_by_the_environment_or_a_host_alias() {
    let (world, daemon, _, secret) = setup("");
    backup(&daemon, "r1");
    // A service file that points at the live database, selected by the
    // operator's shell environment.
    let service_file = world.work.path().join("pg_service.conf");
    std::fs::write(
        &service_file,
        format!(
            "[live]\nhost={}\nport={}\ndbname=directus\nuser=postgres\n",
            world.pg.socket_dir().display(),
            world.pg.port
        ),
    )
    .expect("service file");
    let live_tables_before = world.pg.psql(
        "directus",
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'cutter_governance'",
    );
    let out = restore(
        &world,
        &daemon,
        "r1",
        &secret,
        &world.pg.scratch_url("scratch_x"),
    )
    .env("PGSERVICE", "live")
    .env("PGSERVICEFILE", &service_file)
    .env("PGDATABASE", "directus")
    .env("PGOPTIONS", "-c search_path=cutter_governance")
    // Nothing listens there: a psql that honoured it could not connect.
    .env("PGHOSTADDR", "127.0.0.3")
    .output()
    .expect("restore");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        world.pg.count("scratch_x", "cutter_governance.cut_run"),
        5000
    );
    assert_eq!(
        world.pg.psql(
            "directus",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'cutter_governance'",
        ),
        live_tables_before
    );
    // Loaded as a role that owns the scratch database and is no superuser.
    assert_eq!(
        world.pg.psql(
            "scratch_x",
            "SELECT r.rolname || ':' || r.rolsuper FROM pg_tables t JOIN pg_roles r ON r.rolname = t.tableowner \
             WHERE t.tablename = 'cut_run'"
        ),
        "cutter_restore:false"
    );

    // Another spelling of the live server (a name that resolves nowhere,
    // the address in hostaddr): refused by its identity, after connecting.
    world.pg.prepend_hba("host all postgres 127.0.0.1/32 trust");
    // Over TCP the load role logs in with its one-use password (SCRAM, from
    // the verifier cutterctl made): the restore works there too.
    let tcp = format!(
        "postgres://postgres@127.0.0.1:{}/scratch_tcp",
        world.pg.port
    );
    let out = restore(&world, &daemon, "r1", &secret, &tcp)
        .output()
        .expect("restore");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        world.pg.count("scratch_tcp", "cutter_governance.cut_run"),
        5000
    );
    let alias = format!(
        "postgres://postgres@db.invalid:{}/directus?hostaddr=127.0.0.1",
        world.pg.port
    );
    let out = restore(&world, &daemon, "r1", &secret, &alias)
        .output()
        .expect("restore");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("system identifier"), "{}", text(&out));
}

#[test]
fn prune_never_leaves_the_directory() {
    let (world, daemon, _, _) = setup("[retention]\nkeep_last = 1\nkeep_days = 0\n");
    for id in ["r1", "r2"] {
        backup(&daemon, id);
        std::thread::sleep(Duration::from_millis(1100));
    }
    // A victim pair outside the directory, and a manifest whose run_id points at it.
    // A victim pair outside the directory that would verify on its own, and
    // a signed manifest whose run_id points at it.
    let outside = world.work.path().join("outside");
    std::fs::create_dir(&outside).expect("outside");
    let r1_artifact = std::fs::read(world.backups.join("r1.sql.gpg")).expect("r1");
    let bytes = plant(&world, "r1", "x", &r1_artifact, None);
    let mut m: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    m["run_id"] = "../outside/victim".into();
    m["created_at"] = "2020-01-01T00:00:00Z".into();
    let bytes = serde_json::to_vec_pretty(&m).expect("json");
    std::fs::write(world.backups.join("x.manifest.json"), &bytes).expect("manifest");
    world.sign_as_daemon("x", &bytes);
    std::fs::write(outside.join("victim.sql.gpg"), &r1_artifact).expect("victim");
    std::fs::write(outside.join("victim.manifest.json"), &bytes).expect("victim");
    // A copy of the newest run under another name (its manifest names r2).
    for (from, to) in [
        ("r2.sql.gpg", "dup.sql.gpg"),
        ("r2.manifest.json", "dup.manifest.json"),
        ("r2.manifest.json.sig", "dup.manifest.json.sig"),
    ] {
        if world.backups.join(from).exists() {
            std::fs::copy(world.backups.join(from), world.backups.join(to)).expect("copy");
        }
    }
    let out = daemon.ctl(&["prune", "--confirm"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        outside.join("victim.sql.gpg").exists() && outside.join("victim.manifest.json").exists()
    );
    assert!(!t.contains("DELETED  r2"), "{t}");
    assert!(world.backups.join("r2.sql.gpg").exists(), "{t}");
    assert!(t.contains("DELETED  r1"), "the old genuine run goes: {t}");
    assert!(
        t.contains("LEAVE    x") && t.contains("LEAVE    dup"),
        "{t}"
    );
}

#[tokio::test]
async fn retry_never_returns_junk_or_another_run() {
    let (world, daemon, fpr, _) = setup("");
    backup(&daemon, "r1");
    let mut client = daemon.client().await;
    let call = |id: &str| PreWriteBackupRequest { run_id: id.into() };

    // 100 random bytes with a matching (unsigned, then stolen-key-less) manifest.
    let junk: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37)).collect();
    plant(&world, "r1", "junk", &junk, None);
    let err = client
        .pre_write_backup(call("junk"))
        .await
        .expect_err("junk");
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    assert_eq!(
        std::fs::read(world.backups.join("junk.sql.gpg")).expect("kept"),
        junk
    );

    // A copy of r1's files under another name answers as r1: refused.
    for (from, to) in [
        ("r1.sql.gpg", "planted.sql.gpg"),
        ("r1.manifest.json", "planted.manifest.json"),
        ("r1.manifest.json.sig", "planted.manifest.json.sig"),
    ] {
        std::fs::copy(world.backups.join(from), world.backups.join(to)).expect("copy");
    }
    let err = client
        .pre_write_backup(call("planted"))
        .await
        .expect_err("planted");
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");

    // The genuine retry still returns the same envelope.
    let env = client
        .pre_write_backup(call("r1"))
        .await
        .expect("retry")
        .into_inner();
    assert!(env.reused && env.run_id == "r1");

    // After a change of table scope or of keys, the old artifact is not today's backup.
    drop(daemon);
    let mut cfg = world.config(Some(&fpr), Some(world.work.path().join("ops.asc")));
    cfg.tables.pop();
    let daemon = world.start(&cfg);
    let err = daemon
        .client()
        .await
        .pre_write_backup(call("r1"))
        .await
        .expect_err("scope changed");
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("scope"), "{err:?}");
    drop(daemon);
    let (fpr2, cert2) = world.key(KeyKind::Rsa4096, "other");
    let daemon = world.start(&world.config(Some(&fpr2), Some(cert2)));
    let err = daemon
        .client()
        .await
        .pre_write_backup(call("r1"))
        .await
        .expect_err("key changed");
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("encrypted to"), "{err:?}");
}

#[test]
fn planted_links_are_never_followed() {
    let (world, daemon, _, _) = setup("");
    backup(&daemon, "r1");
    let victim = world.work.path().join("victim.txt");
    std::fs::write(&victim, b"precious").expect("victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::os::unix::fs::symlink(&victim, world.backups.join(".r3.sql.gpg.partial")).expect("link");
    std::os::unix::fs::symlink(&victim, world.backups.join("r1.pinned")).expect("link");
    backup(&daemon, "r3");
    let out = daemon.ctl(&["pin", "r1", "--note", "overwritten?"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
    assert_eq!(
        std::fs::metadata(&victim)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    // A manifest that is a link to a file elsewhere is not read.
    let elsewhere = world.work.path().join("elsewhere.json");
    std::fs::copy(world.backups.join("r3.manifest.json"), &elsewhere).expect("copy");
    std::fs::rename(
        world.backups.join("r3.manifest.json"),
        world.work.path().join("r3.bak"),
    )
    .expect("move");
    std::os::unix::fs::symlink(&elsewhere, world.backups.join("r3.manifest.json")).expect("link");
    let out = daemon.ctl(&["verify", "r3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("symbolic link"), "{}", text(&out));

    // A directory others can write into fails selftest, naming the fix.
    std::fs::set_permissions(&world.backups, std::fs::Permissions::from_mode(0o770))
        .expect("chmod");
    let out = daemon.ctl(&["selftest"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("group-writable"), "{}", text(&out));
    std::fs::set_permissions(&world.backups, std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    std::os::unix::fs::chown(&world.backups, Some(4242), None).expect("chown");
    let out = daemon.ctl(&["selftest"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("owned by uid 4242"), "{}", text(&out));
}

#[test]
fn failed_decrypt_commits_nothing() {
    // Past ~25 MiB sequoia streams plaintext before it checks the MDC: the
    // restore must not load a byte until the whole message authenticated.
    let (world, daemon, _, secret) = setup("");
    world.pg.psql(
        "directus",
        "INSERT INTO cutter_governance.cut_audit_log (label) \
         SELECT md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) FROM generate_series(1, 400000) g",
    );
    let mut cfg_text = std::fs::read_to_string(config_path(&daemon)).expect("config");
    cfg_text = cfg_text.replace("[backup]\n", "[backup]\ncompression = \"none\"\n");
    std::fs::write(config_path(&daemon), cfg_text).expect("config");
    daemon.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    backup(&daemon, "big");
    let artifact = world.backups.join("big.sql.gpg");
    let mut bytes = std::fs::read(&artifact).expect("read");
    assert!(bytes.len() > 30 << 20, "{} bytes", bytes.len());
    // In the MDC at the very end: every plaintext byte decrypts intact, and
    // only the integrity check, after everything was streamed, fails.
    let near_end = bytes.len() - 3;
    bytes[near_end] ^= 0x01;
    std::fs::write(&artifact, &bytes).expect("write");
    // A stolen signing key makes the tampered file "verify".
    let mut m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(world.backups.join("big.manifest.json")).expect("manifest"),
    )
    .expect("json");
    m["sha256"] = sha256_hex(&bytes).into();
    let mbytes = serde_json::to_vec_pretty(&m).expect("json");
    std::fs::write(world.backups.join("big.manifest.json"), &mbytes).expect("write");
    world.sign_as_daemon("big", &mbytes);
    let out = restore(
        &world,
        &daemon,
        "big",
        &secret,
        &world.pg.scratch_url("s_big"),
    )
    .output()
    .expect("restore");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("manipulated") || text(&out).contains("MDC"),
        "{}",
        text(&out)
    );
    assert!(
        !world.pg.db_exists("s_big"),
        "a restore that failed authentication created or loaded the scratch database: {}",
        text(&out)
    );
}

#[test]
fn restore_survives_a_chatty_psql() {
    let (world, daemon, fpr, secret) = setup("");
    backup(&daemon, "real");
    // 2 MB of notices on psql's stderr while 1 MB of input is still to come.
    let mut sql = String::from(
        "DO $$ BEGIN FOR i IN 1..20000 LOOP RAISE NOTICE 'chatty notice number % with some padding to fill the pipe', i; END LOOP; END $$;\n",
    );
    for _ in 0..16_000 {
        sql.push_str("-- filler comment line that keeps stdin busy after the notices ........\n");
    }
    let artifact = gpg_encrypt(&world, &fpr, sql.as_bytes());
    let bytes = plant(
        &world,
        "real",
        "chatty",
        &artifact,
        Some(serde_json::json!([])),
    );
    world.sign_as_daemon("chatty", &bytes);
    let mut child = restore(
        &world,
        &daemon,
        "chatty",
        &secret,
        &world.pg.scratch_url("s_chatty"),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("restore");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("restore deadlocked on psql's stderr");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn pg_dump_connects_like_the_pool() {
    let world = World::new(Grants::All);
    world
        .pg
        .psql("postgres", "ALTER SYSTEM SET log_connections = on");
    world.pg.psql("postgres", "SELECT pg_reload_conf()");
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.database_url = format!("{}?application_name=cutter-e2e-app", world.pg.role_url());
    let daemon = world.start(&cfg);
    backup(&daemon, "r1");
    let log = world.pg.server_log();
    let ours: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection authorized: user=cutter_exec"))
        .collect();
    assert!(ours.len() >= 2, "pool and pg_dump connect: {log}");
    assert!(
        ours.iter()
            .all(|l| l.contains("application_name=cutter-e2e-app")),
        "every connection, pg_dump's included, uses the URL's parameters: {ours:#?}"
    );
}

#[test]
fn pg_dump_uses_the_pools_tls_settings() {
    // The role may only log in over TLS with a client certificate; the
    // server's certificate is checked against a throwaway CA (verify-full).
    let world = World::new(Grants::All);
    let tls = world.pg.require_client_certs();
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.database_url = format!(
        "{}?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        world.pg.role_url(),
        tls.ca.display(),
        tls.cert.display(),
        tls.key.display()
    );
    let daemon = world.start(&cfg);
    let out = daemon.ctl(&["selftest"]);
    assert!(out.status.success(), "{}\n{}", text(&out), daemon.log());
    backup(&daemon, "over-tls");
    let out = daemon.ctl(&["verify", "over-tls"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn the_unit_keeps_foreign_env_and_cores_out_and_reloads_without_kill() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/cutter-backupd.service"),
    )
    .expect("unit");
    let lines: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(
        !lines.iter().any(|l| l.starts_with("EnvironmentFile=")),
        "{unit}"
    );
    assert!(lines.contains(&"LimitCORE=0"), "{unit}");
    let reload = lines
        .iter()
        .find(|l| l.starts_with("ExecReload="))
        .expect("ExecReload");
    assert!(
        reload.contains("cutter-backupd --signal-reload $MAINPID"),
        "{reload}"
    );

    // The reload verb works on a real daemon.
    let (world, daemon, _, _) = setup("");
    let out = Command::new(workspace_bin("cutter-backupd"))
        .args(["--signal-reload", &daemon.pid().to_string()])
        .output()
        .expect("reload verb");
    assert!(out.status.success(), "{}", text(&out));
    crate::harness::proc::wait_until(
        Duration::from_secs(10),
        || daemon.log().contains("reloaded"),
        || daemon.log(),
    );
    drop(world);
}

#[tokio::test]
async fn socket_edges_peer_first_capped_and_no_foreign_unlink() {
    // A disallowed peer is refused on its headers: a 3 MiB body is never
    // decoded (it would be too large for an allowed one).
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert.clone()));
    cfg.allowed_uids = vec![4242];
    cfg.server_extra = "max_connections = 3\n".into();
    let daemon = world.start(&cfg);
    let big = PreWriteBackupRequest {
        run_id: "x".repeat(3 << 20),
    };
    let err = daemon
        .client()
        .await
        .pre_write_backup(big.clone())
        .await
        .expect_err("denied");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    // Health and reflection sit behind the same check.
    let channel = cutter_backup::channel(&daemon.socket)
        .await
        .expect("channel");
    let err = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect_err("denied");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    drop(daemon);
    let mut cfg = world.config(Some(&fpr), Some(cert.clone()));
    cfg.server_extra = "max_connections = 3\n".into();
    let daemon = world.start(&cfg);
    crate::faults::refused_as_too_large(&daemon, big).await;

    // At the cap, the longest-idle connection is closed to admit a new one.
    let idle: Vec<_> = (0..3)
        .map(|_| std::os::unix::net::UnixStream::connect(&daemon.socket).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let out = daemon.ctl(&["status"]);
    assert!(out.status.success(), "idle ones make room: {}", text(&out));
    let closed = idle
        .iter()
        .filter(|s| crate::faults::closed_by_daemon(s))
        .count();
    assert!(closed >= 1, "no idle connection was closed");
    drop(idle);
    drop(daemon);

    // Only when every connection has a request in flight is a new one refused.
    let mut cfg = world.config(Some(&fpr), Some(cert.clone()));
    cfg.server_extra = "max_connections = 1\n".into();
    cfg.pg_dump = Some(crate::harness::dumpers::slow(world.work.path(), 3));
    let daemon = world.start(&cfg);
    let socket = daemon.socket.clone();
    let busy = std::thread::spawn(move || {
        crate::harness::daemon::ctl(&socket, &["backup", "--run-id", "busy"])
    });
    crate::harness::proc::wait_until(
        Duration::from_secs(10),
        || world.backup_files().iter().any(|f| f.ends_with(".partial")),
        || "the backup never started".into(),
    );
    let out = daemon.ctl(&["status"]);
    assert_ne!(out.status.code(), Some(0), "over the cap: {}", text(&out));
    assert!(daemon.log().contains("max_connections"), "{}", daemon.log());
    let out = busy.join().expect("busy caller");
    assert!(
        out.status.success(),
        "the busy one is untouched: {}",
        text(&out)
    );
    let out = daemon.ctl(&["status"]);
    assert!(out.status.success(), "{}", text(&out));
    drop(daemon);

    // A file where the socket should be is not deleted: the daemon refuses to start.
    let planted = world.work.path().join("backupd.sock");
    let _ = std::fs::remove_file(&planted);
    std::fs::write(&planted, b"not a socket").expect("plant");
    let out = Command::new(workspace_bin("cutter-backupd"))
        .arg("--config")
        .arg(world.work.path().join("backupd.toml"))
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("daemon");
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("not a socket"), "{}", text(&out));
    assert_eq!(std::fs::read(&planted).expect("kept"), b"not a socket");
}

#[test]
fn secrets_must_be_private_and_urls_password_free() {
    let (world, daemon, _, _) = setup("");
    let pw = world.work.path().join("db-password");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    daemon.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    let out = daemon.ctl(&["selftest"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));
    assert!(!text(&out).contains(crate::harness::ROLE_PASSWORD));

    let cfg = world.work.path().join("backupd.toml");
    let t = std::fs::read_to_string(&cfg).expect("config");
    let with_pw = t.replace("/directus\"", "/directus?password=hunter2\"");
    assert_ne!(t, with_pw);
    std::fs::write(&cfg, with_pw).expect("write");
    let out = Command::new(workspace_bin("cutter-backupd"))
        .arg("--config")
        .arg(&cfg)
        .arg("--check-config")
        .output()
        .expect("check-config");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("password"), "{}", text(&out));
    assert!(!text(&out).contains("hunter2"), "{}", text(&out));
}

#[test]
fn list_escapes_control_characters() {
    let (world, daemon, _, _) = setup("");
    backup(&daemon, "r1");
    let r1 = std::fs::read(world.backups.join("r1.sql.gpg")).expect("r1");
    // A manifest signed with the daemon's (stolen) key, for its own run and
    // artifact, whose created_at carries escape sequences: the store and the
    // daemon believe it as it is, so only cutterctl's output escapes them.
    let bytes = plant(&world, "r1", "esc", &r1, None);
    let mut m: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    m["created_at"] = "2026-11-29T00:00:00Z\u{1b}[2J\u{1b}[31m\r".into();
    let bytes = serde_json::to_vec_pretty(&m).expect("json");
    std::fs::write(world.backups.join("esc.manifest.json"), &bytes).expect("write");
    world.sign_as_daemon("esc", &bytes);
    // And one whose run_id disagrees with its file name: refused, and the
    // reason quotes the planted name.
    let bytes = plant(&world, "r1", "bad", &r1, None);
    let mut m: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    m["run_id"] = "\u{1b}[2J\u{1b}[31mr9\r".into();
    std::fs::write(
        world.backups.join("bad.manifest.json"),
        serde_json::to_vec_pretty(&m).expect("json"),
    )
    .expect("write");
    let out = daemon.ctl(&["list"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        !out.stdout.contains(&0x1b) && !out.stdout.contains(&b'\r'),
        "a control character reached the terminal: {stdout:?}"
    );
    let line = |run_id: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{run_id} ")))
            .unwrap_or_else(|| panic!("no line for {run_id}: {stdout:?}"))
            .to_owned()
    };
    let esc = line("esc");
    assert!(
        esc.contains("2026-11-29T00:00:00Z\\u{1b}[2J\\u{1b}[31m\\r") && esc.contains("complete"),
        "the signed manifest is believed and its created_at shown escaped: {esc:?}"
    );
    let bad = line("bad");
    assert!(bad.contains("corrupt"), "{bad:?}");
}

#[test]
fn offsite_commands_trust_no_ca_from_the_environment_so_a_mitm_sees_nothing() {
    let work = tempfile::Builder::new()
        .prefix("cutter-mitm-")
        .tempdir()
        .expect("tempdir");
    let w = work.path();
    let attacker = Ca::new(&w.join("attacker"), "not-your-ca");
    let mitm = Mitm::start(&attacker);
    // What an operator's workstation holds to reach the bucket: the config,
    // the credentials, the pinned signer.
    let creds = w.join("s3-credentials");
    std::fs::write(
        &creds,
        "aws_access_key_id = AKIAOPERATOR\naws_secret_access_key = for-the-bucket-only-Zx9\n",
    )
    .expect("credentials");
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::create_dir(w.join("signer")).expect("mkdir signer");
    let signer = cutter_core::signer::Signer::load_or_create(
        &w.join("signer").join("key.asc"),
        &w.join("backups"),
    )
    .expect("signer");
    let pinned = w.join("signer.asc");
    std::fs::write(&pinned, signer.public_armored().expect("armor")).expect("pin");
    let config = w.join("backupd.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"postgres://u@h/db\"\n[backup]\ndir = {:?}\ntables = [\"s.t\"]\n\
             [offsite]\nurl = \"s3://bucket/p\"\nendpoint = \"https://127.0.0.1:{}\"\npath_style = true\n\
             credentials_file = {:?}\nhost = \"h\"\nrequest_timeout_secs = 5\nmax_attempts = 1\n",
            w.join("backups").display().to_string(),
            mitm.port,
            creds.display().to_string()
        ),
    )
    .expect("config");
    let ca_dir = w.join("attacker-cas");
    std::fs::create_dir(&ca_dir).expect("mkdir");
    std::fs::copy(&attacker.cert, ca_dir.join("ca.pem")).expect("copy ca");

    // Whoever set the operator's environment trusts only their own CA.
    let (config, pinned) = (config.display().to_string(), pinned.display().to_string());
    let cases: [(&str, &Path, Vec<&str>); 2] = [
        (
            "SSL_CERT_FILE",
            &attacker.cert,
            vec![
                "verify",
                "--offsite",
                "r1",
                "--config",
                &config,
                "--signer",
                &pinned,
            ],
        ),
        (
            "SSL_CERT_DIR",
            &ca_dir,
            vec!["list", "--offsite", "--config", &config],
        ),
    ];
    for (var, value, args) in cases {
        let out = Command::new(workspace_bin("cutterctl"))
            .args(&args)
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .env(var, value)
            .stdin(Stdio::null())
            .output()
            .expect("cutterctl");
        let t = text(&out);
        assert!(
            !mitm.received().contains("HTTP/1.1"),
            "{var}: a request reached the man in the middle:\n{}",
            mitm.received()
        );
        assert_eq!(out.status.code(), Some(1), "{var}: {t}");
        assert!(t.contains("UnknownIssuer"), "{var}: {t}");
        assert!(t.contains(&format!("ignoring {var}:")), "{var}: {t}");
    }
    // Both reached it, and refused its certificate during the handshake.
    assert!(
        mitm.log().matches("alert unknown ca").count() >= 2,
        "{}",
        mitm.log()
    );
}
