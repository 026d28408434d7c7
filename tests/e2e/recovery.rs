//! Recovery after a bad run, against real PostgreSQL and gpg: the run's
//! tables loaded beside live (never touching a live table), `diff` naming
//! exactly what a simulated run changed, and `revert` putting back exactly
//! those rows, as SQL for psql or applied, guarded against rows changed
//! since, limited to chosen keys, and refusing hostile input.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::adversarial::{config_path, gpg_encrypt, plant};
use crate::harness::proc::workspace_bin;
use crate::harness::{Daemon, Grants, KeyKind, World, text};

/// Three tables linked by foreign keys (one with a composite key), and one
/// without any key; every awkward value kind the run touches.
const FIXTURE: &str = r#"
CREATE TABLE cutter_governance.rec_parent (
  id int PRIMARY KEY, name text, tags text[], doc json, data bytea, at timestamptz, note text);
CREATE TABLE cutter_governance.rec_child (
  parent_id int REFERENCES cutter_governance.rec_parent(id), seq int, val numeric, label text,
  PRIMARY KEY (parent_id, seq));
CREATE TABLE cutter_governance.rec_leaf (
  id bigint PRIMARY KEY, parent_id int, seq int, flag boolean,
  FOREIGN KEY (parent_id, seq) REFERENCES cutter_governance.rec_child(parent_id, seq));
CREATE TABLE cutter_governance.rec_log (msg text, n int);
INSERT INTO cutter_governance.rec_parent
  SELECT g, 'parent ' || g, ARRAY['a', 'b' || g], json_build_object('g', g), decode(md5(g::text), 'hex'),
         '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 hour', NULL
  FROM generate_series(1, 20) g;
INSERT INTO cutter_governance.rec_child
  SELECT p, s, p * 10 + s + 0.25, 'child ' || p || '/' || s FROM generate_series(1, 20) p, generate_series(1, 3) s;
INSERT INTO cutter_governance.rec_leaf
  SELECT p * 100 + s, p, s, s % 2 = 0 FROM generate_series(1, 20) p, generate_series(1, 3) s;
INSERT INTO cutter_governance.rec_log VALUES ('same', 1), ('same', 1), ('other', 2), (NULL, 3);
GRANT SELECT ON cutter_governance.rec_parent, cutter_governance.rec_child,
  cutter_governance.rec_leaf, cutter_governance.rec_log TO cutter_exec;
"#;

/// The bad run: what it does, in SQL, and what `diff` must report.
const RUN: &str = r#"
UPDATE cutter_governance.rec_parent SET name = E'tab\there\nnewline \\ back''slash "q" ünï \\! id', note = NULL WHERE id = 3;
UPDATE cutter_governance.rec_parent SET tags = ARRAY[NULL, 'x,y', '{z}'], doc = '{"k": [1, null]}', data = '\x00ff'::bytea, at = '1999-12-31 23:59:59.5-08' WHERE id = 4;
UPDATE cutter_governance.rec_parent SET note = 'touched' WHERE id = 5;
DELETE FROM cutter_governance.rec_leaf WHERE parent_id = 7;
DELETE FROM cutter_governance.rec_child WHERE parent_id = 7;
DELETE FROM cutter_governance.rec_parent WHERE id = 7;
INSERT INTO cutter_governance.rec_parent VALUES (21, E'new\\.\nrow', '{}', 'null', '', NULL, E'\\.');
INSERT INTO cutter_governance.rec_child VALUES (21, 1, NULL, 'new child');
INSERT INTO cutter_governance.rec_leaf VALUES (2101, 21, 1, NULL);
UPDATE cutter_governance.rec_child SET val = 0.5, label = NULL WHERE parent_id = 2 AND seq = 2;
UPDATE cutter_governance.rec_leaf SET flag = NOT flag WHERE id = 101;
DELETE FROM cutter_governance.rec_log WHERE ctid = (SELECT ctid FROM cutter_governance.rec_log WHERE msg = 'same' LIMIT 1);
INSERT INTO cutter_governance.rec_log VALUES (E'new\tlog', 9);
"#;

/// (table, kind, key) of every change `RUN` makes.
fn truth() -> BTreeSet<(String, String, String)> {
    let t = |table: &str, kind: &str, key: &str| {
        (
            format!("cutter_governance.{table}"),
            kind.to_owned(),
            key.to_owned(),
        )
    };
    let mut s = BTreeSet::from([
        t("rec_parent", "updated", "id=3"),
        t("rec_parent", "updated", "id=4"),
        t("rec_parent", "updated", "id=5"),
        t("rec_parent", "deleted", "id=7"),
        t("rec_parent", "inserted", "id=21"),
        t("rec_child", "inserted", "parent_id=21,seq=1"),
        t("rec_child", "updated", "parent_id=2,seq=2"),
        t("rec_leaf", "inserted", "id=2101"),
        t("rec_leaf", "updated", "id=101"),
        t("rec_log", "deleted", "null"),
        t("rec_log", "inserted", "null"),
    ]);
    for seq in 1..=3 {
        s.insert(t("rec_child", "deleted", &format!("parent_id=7,seq={seq}")));
        s.insert(t("rec_leaf", "deleted", &format!("id={}", 700 + seq)));
    }
    s
}

const REC_TABLES: [&str; 4] = ["rec_parent", "rec_child", "rec_leaf", "rec_log"];

struct Rec {
    world: World,
    daemon: Daemon,
    secret: PathBuf,
    live: String,
}

impl Rec {
    fn new() -> Self {
        Self::with("", &[])
    }

    /// The fixture, then `sql`, with `extra` tables in scope too.
    fn with(sql: &str, extra: &[&str]) -> Self {
        let world = World::new(Grants::All);
        world.pg.psql("directus", FIXTURE);
        if !sql.is_empty() {
            world.pg.psql("directus", sql);
        }
        let (fpr, cert) = world.key(KeyKind::Ed25519, "ops");
        let secret = world.work.path().join("ops-secret.asc");
        world.gpg.export_secret(&fpr, &secret);
        let mut cfg = world.config(Some(&fpr), Some(cert));
        cfg.tables.extend(
            REC_TABLES
                .iter()
                .chain(extra)
                .map(|t| format!("cutter_governance.{t}")),
        );
        let daemon = world.start(&cfg);
        daemon.backup("run1");
        let live = world.pg.scratch_url("directus");
        Self {
            world,
            daemon,
            secret,
            live,
        }
    }

    fn ctl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(workspace_bin("cutterctl"));
        c.arg("--socket")
            .arg(&self.daemon.socket)
            .args(args)
            .arg("--config")
            .arg(config_path(&self.daemon))
            .stdin(Stdio::null());
        c
    }

    fn beside(&self, run: &str, extra: &[&str]) -> std::process::Output {
        self.ctl(&["restore", run, "--beside-live", "--live", &self.live])
            .arg("--secret-key")
            .arg(&self.secret)
            .arg("--passphrase-file")
            .arg(self.world.gpg.passphrase_file())
            .args(extra)
            .output()
            .expect("cutterctl restore --beside-live")
    }

    /// md5 of every row's text, in order, per recovery table.
    fn digests(&self) -> Vec<String> {
        REC_TABLES
            .iter()
            .map(|t| {
                self.world.pg.psql(
                    "directus",
                    &format!(
                        "SELECT coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), 'empty') FROM cutter_governance.{t} x"
                    ),
                )
            })
            .collect()
    }

    /// `cutterctl revert run1 --live … ARGS`.
    fn revert(&self, args: &[&str]) -> std::process::Output {
        self.ctl(&["revert", "run1", "--live", &self.live])
            .args(args)
            .output()
            .expect("cutterctl revert")
    }

    fn diff_json(&self, extra: &[&str]) -> Vec<serde_json::Value> {
        let out = self
            .ctl(&["--json", "diff", "run1", "--live", &self.live])
            .args(extra)
            .output()
            .expect("diff");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }
}

/// A key as `col=value,…`, columns sorted (JSON object order is not ours).
fn canon(key: &serde_json::Value) -> String {
    match key.as_object() {
        None => key.to_string(),
        Some(m) => {
            let mut kv: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            kv.sort();
            kv.join(",")
        }
    }
}

fn seen(rows: &[serde_json::Value]) -> BTreeSet<(String, String, String)> {
    rows.iter()
        .map(|r| {
            (
                r["table"].as_str().expect("table").to_owned(),
                r["kind"].as_str().expect("kind").to_owned(),
                canon(&r["key"]),
            )
        })
        .collect()
}

#[test]
fn diff_names_the_runs_changes_and_revert_puts_back_exactly_those_rows() {
    let rec = Rec::new();
    let before = rec.digests();
    rec.world.pg.psql("directus", RUN);
    let after_run = rec.digests();
    assert_ne!(before, after_run);

    // Beside live: the live tables do not change.
    let out = rec.beside("run1", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("BESIDE LIVE: OK"), "{}", text(&out));
    assert_eq!(rec.digests(), after_run, "a live table changed");
    // Its schema exists only once.
    let again = rec.beside("run1", &[]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("exists already"), "{}", text(&again));

    // diff: exactly the run's changes, in JSON and in text.
    let rows = rec.diff_json(&[]);
    let want = truth();
    assert_eq!(rows.len(), want.len(), "{rows:#?}");
    assert_eq!(seen(&rows), want);
    let p3 = rows
        .iter()
        .find(|r| r["table"] == "cutter_governance.rec_parent" && r["key"]["id"] == 3)
        .expect("parent 3");
    assert_eq!(p3["columns"], serde_json::json!(["name"]));
    assert_eq!(p3["old"]["name"], "parent 3");
    assert_eq!(
        p3["new"]["name"],
        "tab\there\nnewline \\ back'slash \"q\" ünï \\! id"
    );
    let masked = rec.diff_json(&["--mask", "name"]);
    let m3 = masked
        .iter()
        .find(|r| r["table"] == "cutter_governance.rec_parent" && r["key"]["id"] == 3)
        .expect("parent 3");
    assert_eq!(m3["old"]["name"], "***");
    let out = rec
        .ctl(&["diff", "run1", "--live", &rec.live])
        .output()
        .expect("diff");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        shown.contains("cutter_governance.rec_parent") && shown.contains("(+1 -1 ~3)"),
        "{shown}"
    );
    assert!(
        shown.contains("no key: rows compared as multisets"),
        "{shown}"
    );
    assert!(shown.contains("4 of 13 tables changed"), "{shown}");
    // Every changed row follows its table's heading, once.
    let row_lines = shown
        .lines()
        .filter(|l| ["+ ", "- ", "~ "].iter().any(|p| l.starts_with(p)))
        .count();
    assert_eq!(row_lines, want.len(), "{shown}");
    assert!(
        shown.contains("--- cutter_governance.rec_parent (key (id))\n")
            && shown.contains(r#"~ {"id":5} note: null -> "touched""#),
        "{shown}"
    );

    // revert --sql: a 0600 file that starts restricted; psql applies it.
    let sql = rec.world.work.path().join("revert.sql");
    let out = rec.revert(&["--sql", sql.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out));
    let mode = std::fs::metadata(&sql).expect("sql").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let body = std::fs::read_to_string(&sql).expect("sql");
    assert!(body.starts_with("\\restrict "), "{}", &body[..80]);
    let psql = |file: &Path| {
        rec.world
            .pg
            .psql_cmd("directus")
            .arg("-f")
            .arg(file)
            .output()
            .expect("psql")
    };
    let out = psql(&sql);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        rec.digests(),
        before,
        "revert --sql applied gives the pre-run tables"
    );

    // The run again; a row changed after the SQL was written is a conflict:
    // psql fails and nothing changes.
    rec.world.pg.psql("directus", RUN);
    let sql2 = rec.world.work.path().join("revert2.sql");
    let out = rec.revert(&["--sql", sql2.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out));
    rec.world.pg.psql(
        "directus",
        "UPDATE cutter_governance.rec_parent SET note = 'someone else' WHERE id = 5",
    );
    let changed = rec.digests();
    let out = psql(&sql2);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("revert conflict"), "{}", text(&out));
    assert_eq!(rec.digests(), changed, "nothing was half-applied");

    // --keys: only parent 3 goes back; everything else keeps the run's values.
    let keys = rec.world.work.path().join("keys.jsonl");
    let rows = rec.diff_json(&["--keys-only"]);
    assert_eq!(rows.len(), want.len());
    let chosen: Vec<String> = rows
        .iter()
        .filter(|r| r["table"] == "cutter_governance.rec_parent" && r["key"]["id"] == 3)
        .map(ToString::to_string)
        .collect();
    assert_eq!(chosen.len(), 1);
    std::fs::write(&keys, chosen.join("\n")).expect("keys");
    let out = rec.revert(&[
        "--apply",
        "--no-backup",
        "--keys",
        keys.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        rec.world.pg.psql(
            "directus",
            "SELECT name || '|' || coalesce(note, 'NULL') FROM cutter_governance.rec_parent WHERE id IN (3, 5) ORDER BY id"
        ),
        "parent 3|NULL\nparent 5|someone else"
    );
    let left = seen(&rec.diff_json(&[]));
    assert_eq!(left.len(), want.len() - 1, "{left:#?}");

    // A row changed by someone else while revert --apply runs: the revert
    // waits on its lock, finds the row changed, and rolls everything back.
    let mut other = rec
        .world
        .pg
        .psql_cmd("directus")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("psql");
    let mut tx = other.stdin.take().expect("stdin");
    writeln!(
        tx,
        "BEGIN; UPDATE cutter_governance.rec_parent SET name = 'concurrent' WHERE id = 4;"
    )
    .expect("write");
    tx.flush().expect("flush");
    let revert = rec
        .ctl(&[
            "revert",
            "run1",
            "--live",
            &rec.live,
            "--apply",
            "--no-backup",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("revert");
    let deadline = Instant::now() + Duration::from_secs(60);
    while rec.world.pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cutterctl' AND wait_event_type = 'Lock'",
    ) != "1"
    {
        assert!(Instant::now() < deadline, "revert never waited on the row");
        std::thread::sleep(Duration::from_millis(50));
    }
    writeln!(tx, "COMMIT;").expect("write");
    drop(tx);
    other.wait().expect("psql");
    let before_conflict = rec.digests();
    let out = revert.wait_with_output().expect("revert");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("REVERT: CONFLICT")
            && text(&out).contains(r#"rec_parent updated {"id":4}"#),
        "{}",
        text(&out)
    );
    assert_eq!(rec.digests(), before_conflict, "nothing was applied");

    // The whole revert through the daemon's pre-revert backup: the tables
    // are what they were before the run (parent 4 as the backup had it).
    let out = rec.revert(&["--apply"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("pre-revert backup revert-run1-"),
        "{}",
        text(&out)
    );
    rec.world.pg.psql(
        "directus",
        "UPDATE cutter_governance.rec_parent SET note = NULL WHERE id = 5",
    );
    assert_eq!(rec.digests(), before);
    let list = rec.daemon.ctl(&["list"]);
    assert!(text(&list).contains("revert-run1-"), "{}", text(&list));

    // Cleanup drops only what --beside-live made.
    let out = rec
        .ctl(&["restore", "run1", "--drop-beside", "--live", &rec.live])
        .output()
        .expect("drop");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        rec.world.pg.psql(
            "directus",
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'cutter_restore_run1'"
        ),
        "0"
    );
    rec.world
        .pg
        .psql("directus", "CREATE SCHEMA cutter_restore_run1");
    let out = rec
        .ctl(&["restore", "run1", "--drop-beside", "--live", &rec.live])
        .output()
        .expect("drop");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not made by"), "{}", text(&out));
}

#[test]
fn beside_live_refuses_changed_columns_wrong_counts_and_hostile_dumps() {
    let rec = Rec::new();
    let live_before = rec.digests();

    // The run added a column: refused, naming it; nothing is left.
    rec.world.pg.psql(
        "directus",
        "ALTER TABLE cutter_governance.rec_child ADD COLUMN extra int",
    );
    let out = rec.beside("run1", &["--table", "cutter_governance.rec_child"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("only in the live table: [extra]"),
        "{}",
        text(&out)
    );
    rec.world.pg.psql(
        "directus",
        "ALTER TABLE cutter_governance.rec_child DROP COLUMN extra",
    );
    let schemas = || {
        rec.world.pg.psql(
            "directus",
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'cutter_restore_%'",
        )
    };
    assert_eq!(schemas(), "0");

    // A manifest whose count is not the dump's: the load rolls back.
    let genuine = std::fs::read(rec.world.backups.join("run1.sql.gpg")).expect("artifact");
    let model: serde_json::Value = serde_json::from_slice(
        &std::fs::read(rec.world.backups.join("run1.manifest.json")).expect("manifest"),
    )
    .expect("json");
    let mut tables = model["tables"].clone();
    for t in tables.as_array_mut().expect("tables") {
        if t["table"] == "cutter_governance.rec_log" {
            t["rows"] = 99.into();
        }
    }
    let bytes = plant(&rec.world, "run1", "miscount", &genuine, Some(tables));
    rec.world.sign_as_daemon("miscount", &bytes);
    let out = rec.beside("miscount", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("the manifest says 99"),
        "{}",
        text(&out)
    );
    assert_eq!(schemas(), "0", "rolled back");

    // A signed hostile dump: a `\.` that ends a block early followed by
    // SQL, escapes, a block for a table the manifest does not list. Only
    // rec_log's rows load, into the table cutterctl made.
    let fpr = model["gpg_fpr"].as_str().expect("gpg_fpr").to_owned();
    let dump = "SET standard_conforming_strings = on;\n\
                COMMENT ON TABLE cutter_governance.rec_leaf IS 'x\n\
                COPY cutter_governance.rec_log (msg, n) FROM stdin;\n\
                forged\t0\n\
                \\.\n\
                ';\n\
                COPY cutter_governance.rec_log (msg, n) FROM stdin;\n\
                a\\tb\\\\.\t1\n\
                \\.\n\
                DROP TABLE cutter_governance.rec_leaf;\n\
                COPY cutter_governance.rec_parent (id) FROM stdin;\n\
                999\n\
                \\.\n";
    let artifact = gpg_encrypt(&rec.world, &fpr, dump.as_bytes());
    let bytes = plant(
        &rec.world,
        "run1",
        "hostile",
        &artifact,
        Some(serde_json::json!([{"table": "cutter_governance.rec_log", "rows": 1}])),
    );
    rec.world.sign_as_daemon("hostile", &bytes);
    let out = rec.beside("hostile", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        rec.world.pg.psql(
            "directus",
            "SELECT string_agg(msg || '/' || n, ',') FROM cutter_restore_hostile.rec_log"
        ),
        "a\tb\\./1"
    );
    assert_eq!(
        rec.world.pg.psql(
            "directus",
            "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE nspname = 'cutter_restore_hostile'"
        ),
        "rec_log",
        "only the table cutterctl made"
    );
    assert_eq!(rec.digests(), live_before, "no live table changed");

    // Two rows blocks for one table: not a dump cutter-backup made.
    let twice = "COPY cutter_governance.rec_log (msg, n) FROM stdin;\nx\t1\n\\.\n\
                 COPY cutter_governance.rec_log (msg, n) FROM stdin;\ny\t2\n\\.\n";
    let artifact = gpg_encrypt(&rec.world, &fpr, twice.as_bytes());
    let bytes = plant(
        &rec.world,
        "run1",
        "twice",
        &artifact,
        Some(serde_json::json!([{"table": "cutter_governance.rec_log", "rows": 1}])),
    );
    rec.world.sign_as_daemon("twice", &bytes);
    let out = rec.beside("twice", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("second rows block"), "{}", text(&out));

    // A manifest naming a table outside the config's scope (a catalog).
    let artifact = gpg_encrypt(&rec.world, &fpr, b"SELECT 1;\n");
    let bytes = plant(
        &rec.world,
        "run1",
        "catalog",
        &artifact,
        Some(serde_json::json!([{"table": "pg_catalog.pg_authid", "rows": 0}])),
    );
    rec.world.sign_as_daemon("catalog", &bytes);
    let out = rec.beside("catalog", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not in backup.tables"),
        "{}",
        text(&out)
    );
}

#[test]
fn generated_and_identity_columns_revert_and_code_others_own_is_refused() {
    let rec = Rec::with(
        "CREATE TABLE cutter_governance.rec_gen (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, a int, \
           twice int GENERATED ALWAYS AS (a * 2) STORED);\n\
         INSERT INTO cutter_governance.rec_gen (a) SELECT g FROM generate_series(1, 5) g;\n\
         CREATE ROLE eve LOGIN;\n\
         CREATE SCHEMA evil AUTHORIZATION eve;\n\
         GRANT USAGE ON SCHEMA cutter_governance TO eve;\n\
         CREATE TABLE cutter_governance.rec_eve (id int PRIMARY KEY, v text);\n\
         INSERT INTO cutter_governance.rec_eve VALUES (1, 'a'), (2, 'b');\n\
         ALTER TABLE cutter_governance.rec_eve OWNER TO eve;\n\
         GRANT SELECT ON cutter_governance.rec_gen, cutter_governance.rec_eve TO cutter_exec;\n\
         GRANT SELECT ON SEQUENCE cutter_governance.rec_gen_id_seq TO cutter_exec;\n",
        &["rec_gen", "rec_eve"],
    );
    let gen_digest = || {
        rec.world.pg.psql(
            "directus",
            "SELECT string_agg(x::text, '|' ORDER BY id) FROM cutter_governance.rec_gen x",
        )
    };
    let before = gen_digest();
    rec.world.pg.psql(
        "directus",
        "DELETE FROM cutter_governance.rec_gen WHERE id = 2; \
         UPDATE cutter_governance.rec_gen SET a = 10 WHERE id = 3; \
         INSERT INTO cutter_governance.rec_gen (a) VALUES (7);",
    );
    let out = rec.beside("run1", &["--table", "cutter_governance.rec_gen"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows = rec.diff_json(&[]);
    let got = seen(&rows);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    for (kind, key) in [
        ("deleted", "id=2"),
        ("updated", "id=3"),
        ("inserted", "id=6"),
    ] {
        assert!(
            got.contains(&(
                "cutter_governance.rec_gen".to_owned(),
                kind.to_owned(),
                key.to_owned()
            )),
            "{got:?}"
        );
    }
    let out = rec.revert(&["--apply", "--no-backup"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        gen_digest(),
        before,
        "identity and generated columns put back"
    );

    // diff loads the run beside live first when it is not there yet.
    let out = rec
        .ctl(&[
            "--json",
            "diff",
            "run1",
            "--live",
            &rec.live,
            "--table",
            "cutter_governance.rec_gen",
            "--schema",
            "s_auto",
        ])
        .arg("--secret-key")
        .arg(&rec.secret)
        .arg("--passphrase-file")
        .arg(rec.world.gpg.passphrase_file())
        .output()
        .expect("diff");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        0,
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("loading it first"), "{}", text(&out));
    assert_eq!(
        rec.world.pg.psql(
            "directus",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 's_auto'"
        ),
        "1"
    );

    // Beside tables someone else owns are not believed.
    rec.world.pg.psql(
        "directus",
        "ALTER TABLE cutter_restore_run1.rec_gen OWNER TO eve",
    );
    let out = rec
        .ctl(&["diff", "run1", "--live", &rec.live])
        .output()
        .expect("diff");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("rec_gen is owned by eve"),
        "{}",
        text(&out)
    );

    // eve owns a table in scope and puts a cast on its row type: loading
    // it beside live would run her function as the superuser.
    let mut eve = rec.world.pg.psql_cmd("directus");
    eve.args([
        "-c",
        "SET ROLE eve",
        "-c",
        "CREATE FUNCTION evil.as_text(cutter_governance.rec_eve) RETURNS text LANGUAGE sql AS $$ SELECT 'same' $$",
        "-c",
        "CREATE CAST (cutter_governance.rec_eve AS text) WITH FUNCTION evil.as_text(cutter_governance.rec_eve)",
    ]);
    let o = eve.output().expect("psql");
    assert!(o.status.success(), "{}", text(&o));
    let out = rec.beside(
        "run1",
        &["--table", "cutter_governance.rec_eve", "--schema", "s_eve"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("evil.as_text") && text(&out).contains("owned by eve"),
        "{}",
        text(&out)
    );
    assert_eq!(
        rec.world.pg.psql(
            "directus",
            "SELECT count(*) FROM pg_namespace WHERE nspname = 's_eve'"
        ),
        "0"
    );

    // A foreign key that cascades into a table a revert would write.
    rec.world.pg.psql(
        "directus",
        "ALTER TABLE cutter_governance.rec_leaf DROP CONSTRAINT rec_leaf_parent_id_seq_fkey; \
         ALTER TABLE cutter_governance.rec_leaf ADD FOREIGN KEY (parent_id, seq) \
           REFERENCES cutter_governance.rec_child (parent_id, seq) ON DELETE CASCADE",
    );
    let out = rec.beside(
        "run1",
        &[
            "--table",
            "cutter_governance.rec_child",
            "--schema",
            "s_child",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = rec.revert(&["--schema", "s_child", "--apply", "--no-backup"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("cascades"), "{}", text(&out));
}
