//! Backup → `gpg --decrypt` → psql into a scratch database → every table's
//! row count equals the manifest's; the envelope describes the file exactly.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use crate::harness::proc::sha256sum;
use crate::harness::{Grants, KeyKind, SCHEMA, TABLES, World};

/// Loads `sql` into a fresh database `db` and returns each table's row count.
fn restore_counts(world: &World, db: &str, sql: &[u8]) -> Vec<(String, u64)> {
    world.pg.psql("postgres", &format!("CREATE DATABASE {db}"));
    world.pg.psql(db, &format!("CREATE SCHEMA {SCHEMA}"));
    let mut child = world
        .pg
        .psql_cmd(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(sql)
        .expect("feed the dump to psql");
    let out = child.wait_with_output().expect("psql");
    assert!(
        out.status.success(),
        "the decrypted dump does not load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    TABLES
        .iter()
        .map(|t| {
            let name = format!("{SCHEMA}.{t}");
            let n = world.pg.count(db, &name);
            (name, n)
        })
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

/// A table in the same schema that the daemon's role can read but the
/// config does not name: the dump must leave it out.
const NOT_IN_SCOPE: &str = "cutter_governance.not_in_scope";
/// Text in each of its rows, so a dump that held them would show it.
const NOT_IN_SCOPE_ROW: &str = "row-outside-the-backup-scope";

async fn round_trip(kind: KeyKind) {
    let world = World::new(Grants::All);
    world.pg.psql(
        "directus",
        &format!(
            "CREATE TABLE {NOT_IN_SCOPE} AS SELECT g AS id, '{NOT_IN_SCOPE_ROW} ' || g AS label \
             FROM generate_series(1, 50) g; GRANT SELECT ON {NOT_IN_SCOPE} TO {role}",
            role = crate::harness::pg::ROLE
        ),
    );
    assert_eq!(world.pg.count("directus", NOT_IN_SCOPE), 50);
    let (fpr, cert) = world.key(kind, "backup");
    let daemon = world.start(&world.config(Some(&fpr), Some(cert)));
    let env = daemon
        .client()
        .await
        .pre_write_backup(cutter_backup::v1::PreWriteBackupRequest {
            run_id: "run-2026-11-29.001".into(),
        })
        .await
        .unwrap_or_else(|s| panic!("backup failed: {s:?}\n{}", daemon.log()))
        .into_inner();

    let artifact = world.backups.join("run-2026-11-29.001.sql.gpg");
    let manifest_path = world.backups.join("run-2026-11-29.001.manifest.json");
    assert_eq!(env.artifact_ref, artifact.display().to_string());
    assert_eq!(env.gpg_fpr, fpr);
    assert_eq!(
        env.sha256,
        sha256sum(&artifact),
        "envelope sha256 is the file's"
    );
    assert_eq!(
        env.size_bytes,
        std::fs::metadata(&artifact).expect("stat").len()
    );
    assert_eq!(mode(&artifact), 0o600, "artifact mode");
    assert_eq!(mode(&manifest_path), 0o600, "manifest mode");
    assert_eq!(
        world.backup_files(),
        [
            "run-2026-11-29.001.manifest.json",
            "run-2026-11-29.001.manifest.json.sig",
            "run-2026-11-29.001.sql.gpg"
        ],
        "exactly the artifact and its manifest, no partials"
    );

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).expect("manifest")).expect("json");
    assert_eq!(manifest["sha256"], env.sha256.as_str());
    assert_eq!(manifest["gpg_fpr"], fpr.as_str());

    let sql = world.gpg.decrypt(&artifact);
    let text = String::from_utf8_lossy(&sql);
    assert!(
        text.contains("PostgreSQL database dump"),
        "plaintext is a pg_dump"
    );
    // The out-of-scope table exists, with rows the daemon's role may read;
    // only the configured scope keeps it (and its rows) out of the dump.
    assert!(
        !text.contains(NOT_IN_SCOPE) && !text.contains(NOT_IN_SCOPE_ROW),
        "the dump holds {NOT_IN_SCOPE}, which the config does not name"
    );

    let restored = restore_counts(&world, "scratch", &sql);
    let in_manifest: Vec<(String, u64)> = manifest["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| {
            (
                t["table"].as_str().expect("table").to_owned(),
                t["rows"].as_u64().expect("rows"),
            )
        })
        .collect();
    let mut restored_sorted = restored.clone();
    restored_sorted.sort();
    assert_eq!(
        in_manifest, restored_sorted,
        "restored row counts equal the manifest's"
    );
    for (table, rows) in &restored {
        assert_eq!(
            *rows,
            world.pg.count("directus", table),
            "{table} matches the source"
        );
    }
    let envelope_counts: Vec<(String, u64)> = env
        .tables
        .iter()
        .map(|t| (t.table.clone(), t.rows))
        .collect();
    assert_eq!(envelope_counts, in_manifest);
}

#[tokio::test]
async fn rsa4096_key_round_trip() {
    round_trip(KeyKind::Rsa4096).await;
}

#[tokio::test]
async fn ed25519_cv25519_key_round_trip() {
    round_trip(KeyKind::Ed25519).await;
}

/// A cert made by sequoia advertises SEIPDv2; GnuPG 2.2 still must decrypt.
#[tokio::test]
async fn cert_advertising_seipdv2_still_yields_seipdv1() {
    use sequoia_openpgp::cert::Preferences;
    use sequoia_openpgp::cert::prelude::*;
    use sequoia_openpgp::policy::StandardPolicy;
    use sequoia_openpgp::serialize::SerializeInto;

    let world = World::new(Grants::All);
    let (cert, _rev) = CertBuilder::general_purpose(Some("sq-made <sq@cutter.invalid>"))
        .set_profile(sequoia_openpgp::Profile::RFC4880)
        .expect("profile")
        .generate()
        .expect("generate");
    let features = cert
        .with_policy(&StandardPolicy::new(), None)
        .expect("valid")
        .features()
        .expect("features");
    assert!(
        features.supports_seipdv2(),
        "the test cert must advertise SEIPDv2"
    );
    let public = world.work.path().join("sq.asc");
    std::fs::write(&public, cert.armored().to_vec().expect("armor")).expect("write");
    let secret = world.work.path().join("sq-secret.asc");
    std::fs::write(&secret, cert.as_tsk().armored().to_vec().expect("armor")).expect("write");
    world.gpg.import(&secret);

    let fpr = cert.fingerprint().to_hex();
    let daemon = world.start(&world.config(Some(&fpr), Some(public)));
    let out = daemon.ctl(&["backup", "--run-id", "sq-run"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    let artifact = world.backups.join("sq-run.sql.gpg");
    let plain = world.gpg.try_decrypt(&artifact);
    assert!(
        plain.status.success(),
        "gpg cannot decrypt: {}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert!(String::from_utf8_lossy(&plain.stdout).contains("CREATE TABLE"));
}

/// The keyring fallback: no cert_file, the key comes from `gpg --export`.
#[tokio::test]
async fn key_from_the_gnupg_keyring() {
    let world = World::new(Grants::All);
    let fpr = world
        .gpg
        .gen_key(KeyKind::Ed25519, "ring <ring@cutter.invalid>");
    let mut cfg = world.config(Some(&fpr), None);
    cfg.gnupg_home = Some(world.gpg.home().to_owned());
    let daemon = world.start(&cfg);
    let selftest = daemon.ctl(&["selftest"]);
    assert!(
        String::from_utf8_lossy(&selftest.stdout).contains("from the GnuPG keyring"),
        "{}",
        String::from_utf8_lossy(&selftest.stdout)
    );
    let out = daemon.ctl(&["backup", "--run-id", "ring-run"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    let env: serde_json::Value = serde_json::from_slice(&out.stdout).expect("envelope json");
    assert_eq!(env["gpg_fpr"], fpr.as_str());
    let sql = world.gpg.decrypt(&world.backups.join("ring-run.sql.gpg"));
    assert!(String::from_utf8_lossy(&sql).contains("cut_change_set_affected_row"));
}
