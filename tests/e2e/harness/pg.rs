//! A throwaway PostgreSQL cluster (initdb + pg_ctl in a temp dir, as user
//! `postgres` when run as root) with the 9-table `cutter_governance` fixture.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use super::proc::{postgres_ids, run};
use super::tls::Ca;

/// The schema in scope.
pub const SCHEMA: &str = "cutter_governance";
/// The nine tables in scope; the last two are the ones the report says lack grants.
pub const TABLES: [&str; 9] = [
    "cut_run",
    "cut_plan",
    "cut_target",
    "cut_change_set",
    "cut_approval",
    "cut_lock",
    "cut_audit_log",
    "verify_result",
    "cut_change_set_affected_row",
];
/// The least-privilege role the daemon connects as.
pub const ROLE: &str = "cutter_exec";
/// Its password: tests assert it never reaches argv or a log line.
pub const ROLE_PASSWORD: &str = "pw-Zq81-never-in-argv-or-logs";

/// Which SELECT grants the fixture gives `cutter_exec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grants {
    /// Every table.
    All,
    /// All but `verify_result` and `cut_change_set_affected_row` (the report's state).
    MissingTwo,
}

/// The files a TLS client of the test cluster needs.
pub struct Tls {
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// The client certificate (CN = the daemon's role).
    pub cert: PathBuf,
    /// Its key (0600).
    pub key: PathBuf,
}

/// A running cluster; stopped and deleted on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
}

/// The newest installed server's bin directory; panics when none is installed.
pub fn bindir() -> PathBuf {
    cutter_core::pgdump::newest_bindir()
        .filter(|d| d.join("initdb").is_file())
        .unwrap_or_else(|| {
            panic!("no PostgreSQL server under /usr/lib/postgresql: run the README's test command, which installs it")
        })
}

fn as_postgres(cmd: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = postgres_ids() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

impl Cluster {
    /// initdb + pg_ctl start; retries a port taken in the meantime.
    pub fn start() -> Self {
        let bin = bindir();
        let dir = tempfile::Builder::new()
            .prefix("cutter-pg-")
            .tempdir()
            .expect("pg tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod pg dir");
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir(&sock).expect("mkdir sock");
        if let Some((uid, gid)) = postgres_ids() {
            std::os::unix::fs::chown(&sock, Some(uid), Some(gid)).expect("chown sock");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown pg dir");
        }
        run(as_postgres(
            Command::new(bin.join("initdb")).arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]),
        ));
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = super::free_port();
            let conf = format!(
                "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 40\n",
                sock.display()
            );
            std::fs::write(data.join("postgresql.auto.conf"), conf).expect("write conf");
            let out = as_postgres(
                Command::new(bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(&data)
                    .arg("-l")
                    .arg(dir.path().join("server.log"))
                    .args(["-w", "-t", "30", "start"]),
            )
            .output()
            .expect("run pg_ctl");
            if out.status.success() {
                return Self { dir, bin, port };
            }
            last_err = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
        }
        panic!("PostgreSQL did not start:\n{last_err}");
    }

    /// Turns TLS on with a throwaway CA, and makes `cutter_exec` log in over
    /// TCP only with a client certificate (`hostssl … cert`, no plain TCP):
    /// a client that drops `sslcert`/`sslkey` or TLS cannot connect.
    pub fn require_client_certs(&self) -> Tls {
        let dir = self.dir.path().join("tls");
        let ca = Ca::new(&dir, "cutter-test-ca");
        ca.issue(
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        );
        let (cert, key) = ca.issue("client", ROLE, "keyUsage=digitalSignature");
        if let Some((uid, gid)) = postgres_ids() {
            for f in ["server.key", "server.crt", "ca.crt"] {
                std::os::unix::fs::chown(dir.join(f), Some(uid), Some(gid)).expect("chown");
            }
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown");
        }
        self.prepend_hba(&format!(
            "hostssl all {ROLE} 127.0.0.1/32 cert\nhostnossl all {ROLE} 127.0.0.1/32 reject"
        ));
        for (k, v) in [
            ("ssl_cert_file", dir.join("server.crt")),
            ("ssl_key_file", dir.join("server.key")),
            ("ssl_ca_file", dir.join("ca.crt")),
        ] {
            self.psql(
                "postgres",
                &format!("ALTER SYSTEM SET {k} = '{}'", v.display()),
            );
        }
        self.psql("postgres", "ALTER SYSTEM SET ssl = on");
        self.psql("postgres", "SELECT pg_reload_conf()");
        Tls {
            ca: ca.cert,
            cert,
            key,
        }
    }

    /// Puts `lines` first in pg_hba.conf and reloads.
    pub fn prepend_hba(&self, lines: &str) {
        let hba = self.dir.path().join("data").join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("pg_hba");
        std::fs::write(&hba, format!("{lines}\n{old}")).expect("pg_hba");
        self.psql("postgres", "SELECT pg_reload_conf()");
    }

    /// `pg_ctl stop -m fast` (the server is down until [`Cluster::start_again`]).
    pub fn stop(&self) {
        run(as_postgres(
            Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "fast", "-w", "stop"]),
        ));
    }

    /// Starts a stopped server again on the same port.
    pub fn start_again(&self) {
        run(as_postgres(
            Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .arg("-l")
                .arg(self.dir.path().join("server.log"))
                .args(["-w", "-t", "30", "start"]),
        ));
    }

    /// What the server logged so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A scratch database's URL on this cluster, as the superuser over its socket.
    pub fn scratch_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@/{db}?host={}&port={}",
            self.socket_dir().display(),
            self.port
        )
    }

    /// True when database `db` exists.
    pub fn db_exists(&self, db: &str) -> bool {
        self.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'"),
        ) == "1"
    }

    /// The socket directory.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The daemon's URL: `cutter_exec` over TCP, so the password is used.
    pub fn role_url(&self) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/directus", self.port)
    }

    /// Runs `sql` in `db` as the superuser; returns unaligned tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = run(self.psql_cmd(db).args(["-At", "-c", sql]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A psql command as the superuser in `db`, stopping at the first error.
    pub fn psql_cmd(&self, db: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.arg("-X")
            .args(["-v", "ON_ERROR_STOP=1", "-q"])
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db]);
        cmd
    }

    /// Creates `directus`, the schema, nine tables with rows, and the role.
    pub fn load_fixture(&self, grants: Grants) {
        self.psql(
            "postgres",
            &format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'"),
        );
        self.psql("postgres", "CREATE DATABASE directus");
        let mut sql =
            format!("CREATE SCHEMA {SCHEMA}; GRANT USAGE ON SCHEMA {SCHEMA} TO {ROLE};\n");
        for (i, t) in TABLES.iter().enumerate() {
            // Different row counts per table, one large enough to stream.
            let rows = if i == 0 { 5000 } else { 37 * (i + 1) };
            sql.push_str(&format!(
                "CREATE TABLE {SCHEMA}.{t} (id bigserial PRIMARY KEY, label text NOT NULL, \
                 doc jsonb, amount numeric(12,2), created_at timestamptz NOT NULL DEFAULT now());\n\
                 INSERT INTO {SCHEMA}.{t} (label, doc, amount) SELECT 'row ' || g || E' with \\'quotes\\' and ünïcode', \
                 jsonb_build_object('n', g, 'tags', jsonb_build_array('a', 'b')), g * 1.5 \
                 FROM generate_series(1, {rows}) g;\n"
            ));
            let grant = grants == Grants::All || i < TABLES.len() - 2;
            if grant {
                sql.push_str(&format!("GRANT SELECT ON {SCHEMA}.{t} TO {ROLE};\n"));
            }
        }
        // Owned sequences' values are dumped with their tables, so the role
        // reads them too (the selftest checks these grants as well).
        sql.push_str(&format!(
            "GRANT SELECT ON ALL SEQUENCES IN SCHEMA {SCHEMA} TO {ROLE};\n"
        ));
        run(self.psql_cmd("directus").args(["-c", &sql]));
    }

    /// Row count of `schema.table` in `db`.
    pub fn count(&self, db: &str, table: &str) -> u64 {
        self.psql(db, &format!("SELECT count(*) FROM {table}"))
            .parse()
            .expect("count")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(
            Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "immediate", "stop"]),
        )
        .output();
    }
}
