//! The box around `cutterctl restore`, tried by someone who holds the
//! daemon's manifest signing key (so every manifest and dump here verifies)
//! or who can create roles and databases on the restore cluster: no string
//! from a manifest reaches a shell, no database someone else prepared is
//! used, nobody else holds the load role, the role keeps nothing a dump set
//! on it, and files that decide what root runs must be root's
//! (docs/security.md, "Restore").

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::adversarial::{backup, config_path, gpg_encrypt, plant, restore, setup, sha256_hex};
use crate::harness::{World, text};

/// `sql` as a signed run `run_id` (encrypted with the public key, signed
/// with the stolen key), listing `tables` in its manifest.
fn hostile_run(
    world: &World,
    fpr: &str,
    run_id: &str,
    sql: &str,
    tables: serde_json::Value,
) -> String {
    let artifact = gpg_encrypt(world, fpr, sql.as_bytes());
    let bytes = plant(world, "real", run_id, &artifact, Some(tables));
    world.sign_as_daemon(run_id, &bytes);
    sha256_hex(&artifact)
}

/// The load role's state: `login|password is null|settings anywhere`.
fn role_state(world: &World) -> String {
    world.pg.psql(
        "postgres",
        "SELECT rolcanlogin::text || '|' || (rolpassword IS NULL)::text || '|' || \
         (SELECT count(*) FROM pg_db_role_setting s WHERE s.setrole = a.oid)::text \
         FROM pg_authid a WHERE rolname = 'cutter_restore'",
    )
}

/// psql on `db` with each statement its own `-c` (one session: `SET ROLE`
/// holds; `CREATE DATABASE` runs outside a transaction block).
fn psql_steps(world: &World, db: &str, steps: &[&str]) {
    let mut c = world.pg.psql_cmd(db);
    for s in steps {
        c.args(["-c", s]);
    }
    let out = c.output().expect("psql");
    assert!(out.status.success(), "{}", text(&out));
}

fn run(mut c: Command) -> std::process::Output {
    c.output().expect("cutterctl restore")
}

/// `cutterctl restore RUN --into <scratch db>` with the exported key.
fn restore_into(
    world: &World,
    daemon: &crate::harness::Daemon,
    secret: &Path,
    run_id: &str,
    db: &str,
) -> std::process::Output {
    run(restore(
        world,
        daemon,
        run_id,
        secret,
        &world.pg.scratch_url(db),
    ))
}

#[test]
fn table_names_from_a_resigned_manifest_never_reach_a_shell() {
    let (world, daemon, fpr, secret) = setup("");
    backup(&daemon, "real");
    let genuine = std::fs::read(world.backups.join("real.sql.gpg")).expect("artifact");
    let recorded = sha256_hex(&genuine);

    // Vector A: the genuine artifact (same sha256, so --expect-sha256
    // passes), a table name with a NUL (psql's fgets would cut the line
    // there, unbalancing the quotes) and one starting a meta-command.
    let marker_a = world.work.path().join("pwned-a");
    let bytes = plant(
        &world,
        "real",
        "nul",
        &genuine,
        Some(serde_json::json!([
            {"table": "A\u{0}.x", "rows": 0},
            {"table": format!("\\! touch {} #.y", marker_a.display()), "rows": 0},
        ])),
    );
    world.sign_as_daemon("nul", &bytes);
    let out = run({
        let mut c = restore(
            &world,
            &daemon,
            "nul",
            &secret,
            &world.pg.scratch_url("s_nul"),
        );
        c.args(["--expect-sha256", &recorded]);
        c
    });
    assert!(!marker_a.exists(), "vector A ran a shell command as root");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("control character or a backslash"),
        "the manifest is refused as corrupt: {}",
        text(&out)
    );
    assert!(!world.pg.db_exists("s_nul"));

    // Vector B: the dump turns standard_conforming_strings off for the
    // load role, so a quote-doubling literal in a later session of that
    // role is escapable with a backslash in a table name.
    let marker_b = world.work.path().join("pwned-b");
    hostile_run(
        &world,
        &fpr,
        "scs",
        "ALTER ROLE CURRENT_USER SET standard_conforming_strings = off;\n",
        serde_json::json!([
            {"table": format!("cutter_governance.x\\' \\! touch {} #", marker_b.display()), "rows": 0},
        ]),
    );
    let out = restore_into(&world, &daemon, &secret, "scs", "s_scs");
    assert!(!marker_b.exists(), "vector B ran a shell command as root");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // The same dump with honest names loads, and the setting it left on
    // the role is gone before any later session of that role.
    hostile_run(
        &world,
        &fpr,
        "scs2",
        "ALTER ROLE CURRENT_USER SET standard_conforming_strings = off;\n",
        serde_json::json!([]),
    );
    let out = restore_into(&world, &daemon, &secret, "scs2", "s_scs2");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(role_state(&world), "false|true|0");

    // An honest restore still works, every table equal to the source.
    let out = restore_into(&world, &daemon, &secret, "real", "s_real");
    assert!(out.status.success(), "{}", text(&out));
    let digest = |db: &str, t: &str| {
        world.pg.psql(
            db,
            &format!(
                "SELECT md5(string_agg(x::text, '' ORDER BY x::text)) FROM cutter_governance.{t} x"
            ),
        )
    };
    let tables = world.pg.psql(
        "directus",
        "SELECT string_agg(relname, ' ' ORDER BY relname) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = 'cutter_governance' AND relkind = 'r'",
    );
    let tables: Vec<&str> = tables.split_whitespace().collect();
    assert_eq!(tables.len(), 9, "{tables:?}");
    for t in &tables {
        assert_eq!(digest("directus", t), digest("s_real", t), "{t}");
    }
}

#[test]
fn a_database_someone_else_prepared_is_refused() {
    let (world, daemon, fpr, secret) = setup("");
    backup(&daemon, "real");
    // eve may only create databases: she makes the name restore's own
    // refusal suggests, with an empty schema she owns and anyone may use.
    world.pg.psql("postgres", "CREATE ROLE eve LOGIN CREATEDB");
    psql_steps(
        &world,
        "postgres",
        &["SET ROLE eve", "CREATE DATABASE directus_restore"],
    );
    psql_steps(
        &world,
        "directus_restore",
        &[
            "SET ROLE eve",
            "CREATE SCHEMA cutter_governance",
            "GRANT CREATE ON SCHEMA cutter_governance TO PUBLIC",
        ],
    );
    let out = restore_into(&world, &daemon, &secret, "real", "directus_restore");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("database directus_restore is owned by eve"),
        "{}",
        text(&out)
    );
    assert_eq!(
        world.pg.psql(
            "directus_restore",
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE nspname = 'cutter_governance'"
        ),
        "0",
        "nothing was loaded into eve's schema"
    );
    assert_eq!(
        world.pg.psql(
            "postgres",
            "SELECT datdba::regrole FROM pg_database WHERE datname = 'directus_restore'"
        ),
        "eve",
        "her database was not taken over"
    );

    // One of ours, but eve was given its public schema (she could plant
    // functions there for a later superuser session, or swap tables).
    world.pg.psql("postgres", "CREATE DATABASE s_pub");
    world.pg.psql("s_pub", "ALTER SCHEMA public OWNER TO eve");
    let out = restore_into(&world, &daemon, &secret, "real", "s_pub");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("is not empty") && text(&out).contains("schema public is owned by eve"),
        "{}",
        text(&out)
    );

    // A dump that hands its tables or a SECURITY DEFINER function to others
    // is refused after the load, and the database restore made is dropped.
    hostile_run(
        &world,
        &fpr,
        "grants",
        "CREATE TABLE cutter_governance.t (a int);\n\
         GRANT ALL ON cutter_governance.t TO PUBLIC;\n\
         CREATE FUNCTION public.f() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1';\n",
        serde_json::json!([{"table": "cutter_governance.t", "rows": 0}]),
    );
    let out = restore_into(&world, &daemon, &secret, "grants", "s_grants");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("granted to PUBLIC") && text(&out).contains("SECURITY DEFINER"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("RESTORE: OK"), "{}", text(&out));
    assert!(
        !world.pg.db_exists("s_grants"),
        "the refused database is dropped"
    );
}

#[test]
fn nobody_else_holds_the_load_role() {
    let (world, daemon, fpr, secret) = setup("");
    backup(&daemon, "real");
    let out = restore_into(&world, &daemon, &secret, "real", "s_first");
    assert!(out.status.success(), "{}", text(&out));

    // A member (as a CREATEROLE role holds on PostgreSQL 16+) could SET
    // ROLE to it and read every restored row: refused before anything.
    world.pg.psql(
        "postgres",
        "CREATE ROLE eve LOGIN; GRANT cutter_restore TO eve",
    );
    let out = restore_into(&world, &daemon, &secret, "real", "s_second");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("eve is a member of cutter_restore"),
        "{}",
        text(&out)
    );
    assert!(!world.pg.db_exists("s_second"));
    assert_eq!(
        role_state(&world),
        "false|true|0",
        "refused before the password was set"
    );

    // Up to PostgreSQL 15 a CREATEROLE role may grant any non-superuser
    // role: eve makes herself a member while the dump loads. Seen after
    // the load: the membership revoked, the database dropped.
    world.pg.psql(
        "postgres",
        "REVOKE cutter_restore FROM eve; ALTER ROLE eve CREATEROLE",
    );
    hostile_run(
        &world,
        &fpr,
        "slow",
        "SELECT pg_sleep(3);\n",
        serde_json::json!([]),
    );
    let child = restore(
        &world,
        &daemon,
        "slow",
        &secret,
        &world.pg.scratch_url("s_third"),
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("restore");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !world.pg.db_exists("s_third") {
        assert!(
            std::time::Instant::now() < deadline,
            "the load never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    psql_steps(
        &world,
        "postgres",
        &["SET ROLE eve", "GRANT cutter_restore TO eve"],
    );
    let out = child.wait_with_output().expect("restore");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("after the load") && text(&out).contains("eve is a member"),
        "{}",
        text(&out)
    );
    assert_eq!(
        world.pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid IN (m.member, m.roleid) \
             WHERE r.rolname = 'cutter_restore'"
        ),
        "0"
    );
    assert!(!world.pg.db_exists("s_third"));
    assert_eq!(role_state(&world), "false|true|0");
}

#[test]
fn the_load_role_keeps_nothing_a_dump_set_or_a_failure_left() {
    let (world, daemon, fpr, secret) = setup("");
    backup(&daemon, "real");
    hostile_run(
        &world,
        &fpr,
        "settings",
        "ALTER ROLE CURRENT_USER SET search_path = public, pg_catalog;\n\
         ALTER ROLE CURRENT_USER IN DATABASE s_settings SET work_mem = '1MB';\n\
         ALTER DATABASE s_settings SET statement_timeout = '1s';\n\
         ALTER ROLE CURRENT_USER PASSWORD 'known-to-the-attacker';\n",
        serde_json::json!([]),
    );
    let out = restore_into(&world, &daemon, &secret, "settings", "s_settings");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        role_state(&world),
        "false|true|0",
        "no login, no password, no setting left"
    );
    assert_eq!(
        world.pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase \
             WHERE d.datname = 's_settings'"
        ),
        "0"
    );

    // prepare fails after the one-use password is set (the target is not
    // empty): the password and LOGIN go all the same.
    world.pg.psql("postgres", "CREATE DATABASE s_full");
    world.pg.psql("s_full", "CREATE TABLE public.t (a int)");
    world.pg.psql(
        "postgres",
        "ALTER ROLE cutter_restore LOGIN PASSWORD 'stale'",
    );
    let out = restore_into(&world, &daemon, &secret, "real", "s_full");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("is not empty"), "{}", text(&out));
    assert_eq!(role_state(&world), "false|true|0");
}

#[test]
fn files_that_decide_what_root_runs_must_be_roots() {
    let (world, daemon, _, secret) = setup("");
    backup(&daemon, "real");
    let config = config_path(&daemon);
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
    };

    // A config its group can write.
    let before = std::fs::metadata(&config)
        .expect("config")
        .permissions()
        .mode();
    mode(&config, 0o664);
    let out = restore_into(&world, &daemon, &secret, "real", "s_cfg");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("chmod go-w {}", config.display())),
        "{}",
        text(&out)
    );
    assert!(!world.pg.db_exists("s_cfg"));
    let check = Command::new(crate::harness::proc::workspace_bin("cutter-backupd"))
        .arg("--check-config")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("cutter-backupd");
    assert!(!check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("writable by its group"),
        "{}",
        text(&check)
    );
    mode(&config, before & 0o7777);

    // A pinned signer cert someone else owns.
    let signer = world.work.path().join("signer.asc");
    let out = daemon.ctl(&["signer", "export"]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(&signer, &out.stdout).expect("save cert");
    std::os::unix::fs::chown(&signer, Some(65534), None).expect("chown");
    let out = run({
        let mut c = restore(
            &world,
            &daemon,
            "real",
            &secret,
            &world.pg.scratch_url("s_sig"),
        );
        c.arg("--signer").arg(&signer);
        c
    });
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("chown root {}", signer.display())),
        "{}",
        text(&out)
    );
    assert!(!world.pg.db_exists("s_sig"));
    // Root's again: the same restore goes through.
    std::os::unix::fs::chown(&signer, Some(0), None).expect("chown");
    let out = run({
        let mut c = restore(
            &world,
            &daemon,
            "real",
            &secret,
            &world.pg.scratch_url("s_sig"),
        );
        c.arg("--signer").arg(&signer);
        c
    });
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_dump_cannot_act_after_its_load() {
    let (world, daemon, fpr, secret) = setup("");
    backup(&daemon, "real");
    // A row-level security policy the table's owner is subject to, whose
    // function would run in the count; a password the dump sets for
    // itself; a template flag that would keep the database from a drop.
    hostile_run(
        &world,
        &fpr,
        "hook",
        "CREATE TABLE cutter_governance.t (a int);\n\
         INSERT INTO cutter_governance.t VALUES (1);\n\
         CREATE FUNCTION cutter_governance.hook() RETURNS boolean LANGUAGE plpgsql AS \
         $$BEGIN EXECUTE 'GRANT ALL ON cutter_governance.t TO PUBLIC'; RETURN true; END$$;\n\
         ALTER TABLE cutter_governance.t ENABLE ROW LEVEL SECURITY;\n\
         ALTER TABLE cutter_governance.t FORCE ROW LEVEL SECURITY;\n\
         CREATE POLICY p ON cutter_governance.t USING (cutter_governance.hook());\n\
         ALTER ROLE CURRENT_USER PASSWORD 'known-to-the-attacker';\n\
         ALTER DATABASE s_hook IS_TEMPLATE true;\n",
        serde_json::json!([{"table": "cutter_governance.t", "rows": 1}]),
    );
    let out = restore_into(&world, &daemon, &secret, "hook", "s_hook");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("function cutter_governance.hook()"),
        "{}",
        text(&out)
    );
    assert!(
        !world.pg.db_exists("s_hook"),
        "dropped, template flag or not"
    );
    assert_eq!(role_state(&world), "false|true|0");

    // A policy that calls nothing of the dump's still makes the count
    // refuse (row_security is off in the count session), never run it.
    hostile_run(
        &world,
        &fpr,
        "rls",
        "CREATE TABLE cutter_governance.t (a int);\n\
         INSERT INTO cutter_governance.t VALUES (1), (2);\n\
         ALTER TABLE cutter_governance.t ENABLE ROW LEVEL SECURITY;\n\
         ALTER TABLE cutter_governance.t FORCE ROW LEVEL SECURITY;\n\
         CREATE POLICY p ON cutter_governance.t USING (a = 1);\n",
        serde_json::json!([{"table": "cutter_governance.t", "rows": 1}]),
    );
    let out = restore_into(&world, &daemon, &secret, "rls", "s_rls");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("row-level security"), "{}", text(&out));
    assert!(!text(&out).contains("RESTORE: OK"), "{}", text(&out));
    assert!(!world.pg.db_exists("s_rls"));
}
