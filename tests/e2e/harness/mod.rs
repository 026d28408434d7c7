//! The end-to-end harness: a throwaway PostgreSQL cluster, real GnuPG homes,
//! and the real daemon and CLI binaries on a Unix socket in a temp dir.
//! A missing binary fails loudly; nothing here is a mock.

pub mod daemon;
pub mod dumpers;
pub mod gpg;
pub mod pg;
pub mod proc;
pub mod runs;
pub mod s3;
pub mod tls;

pub use daemon::{Daemon, DaemonConfig};
pub use gpg::{Gpg, KeyKind};
pub use pg::{Cluster, Grants, ROLE_PASSWORD, SCHEMA, TABLES};
pub use s3::SeaweedFs;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Everything one test needs: a database, a GnuPG home, a work directory.
pub struct World {
    /// Database with the fixture schema.
    pub pg: Cluster,
    /// GnuPG home with the operator's keys.
    pub gpg: Gpg,
    /// Scratch space (config, password file, socket).
    pub work: tempfile::TempDir,
    /// The backups directory (0700).
    pub backups: PathBuf,
}

impl World {
    /// A cluster with the fixture and the given grants, and an empty GnuPG home.
    pub fn new(grants: Grants) -> Self {
        let pg = Cluster::start();
        pg.load_fixture(grants);
        let work = tempfile::Builder::new()
            .prefix("cutter-e2e-")
            .tempdir()
            .expect("work tempdir");
        let backups = work.path().join("backups");
        std::fs::create_dir(&backups).expect("mkdir backups");
        std::fs::set_permissions(&backups, std::fs::Permissions::from_mode(0o700))
            .expect("chmod backups");
        Self {
            pg,
            gpg: Gpg::new(),
            work,
            backups,
        }
    }

    /// A config that passes every check once `fingerprint` names a key in
    /// `cert_file`.
    pub fn config(&self, fingerprint: Option<&str>, cert_file: Option<PathBuf>) -> DaemonConfig {
        DaemonConfig {
            fingerprint: fingerprint.map(str::to_owned),
            cert_file,
            env_file: None,
            gnupg_home: None,
            database_url: self.pg.role_url(),
            password: Some(ROLE_PASSWORD.to_owned()),
            backup_dir: self.backups.clone(),
            tables: TABLES.iter().map(|t| format!("{SCHEMA}.{t}")).collect(),
            pg_dump: None,
            allowed_uids: vec![0],
            extra: String::new(),
            server_extra: String::new(),
            tail: String::new(),
            env: Vec::new(),
            run_as: None,
            wrap: Vec::new(),
        }
    }

    /// A key of `kind` with its armored public cert at `<work>/<name>.asc`.
    pub fn key(&self, kind: KeyKind, name: &str) -> (String, PathBuf) {
        let fpr = self
            .gpg
            .gen_key(kind, &format!("{name} <{name}@cutter.invalid>"));
        let path = self.work.path().join(format!("{name}.asc"));
        self.gpg.export_public(&fpr, &path);
        (fpr, path)
    }

    /// Starts the daemon with `cfg`.
    pub fn start(&self, cfg: &DaemonConfig) -> Daemon {
        Daemon::start(self.work.path(), cfg)
    }

    /// The daemon's manifest signing key (made on its first start in the
    /// work directory): what an attacker who stole it could sign with.
    pub fn daemon_signer(&self) -> cutter_core::signer::Signer {
        cutter_core::signer::Signer::load_or_create(
            &self
                .work
                .path()
                .join("signer")
                .join("manifest-signing-key.asc"),
            &self.backups,
        )
        .expect("the daemon's signing key")
    }

    /// Writes `<run_id>.manifest.json.sig` over `manifest` with the daemon's key.
    pub fn sign_as_daemon(&self, run_id: &str, manifest: &[u8]) {
        let sig = self.daemon_signer().sign(manifest).expect("sign");
        std::fs::write(
            self.backups.join(format!("{run_id}.manifest.json.sig")),
            sig,
        )
        .expect("write signature");
    }

    /// Every file name in the backups directory, sorted (partials included).
    pub fn backup_files(&self) -> Vec<String> {
        list_dir(&self.backups)
    }

    /// Adds `SCHEMA.name` with about `mib` MiB of dump text (incompressible
    /// enough to stream), readable by the daemon's role; returns its name.
    pub fn add_table(&self, name: &str, mib: u64) -> String {
        // One row is ~105 bytes in the dump.
        let rows = mib * 1024 * 1024 / 105;
        let table = format!("{SCHEMA}.{name}");
        self.pg.psql(
            "directus",
            &format!(
                "CREATE TABLE {table} AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS pad \
                 FROM generate_series(1, {rows}) g; GRANT SELECT ON {table} TO {role}",
                role = pg::ROLE
            ),
        );
        table
    }
}

/// A command's stdout and stderr, for assertions and failure messages.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// File names in `dir`, sorted.
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A loopback TCP port for a server the harness starts (and may restart on
/// the same port).
pub fn free_port() -> u16 {
    // Outside the kernel's ephemeral range (32768-60999 on Linux): a port
    // from there can be taken by any outgoing connection while weed is
    // stopped for a restart, and the server then cannot listen on it again (a CI
    // run failed so). Never the same port twice in this process either.
    use std::hash::{BuildHasher, Hasher};
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..10_000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let p = 20_000 + u16::try_from(h.finish() % 12_000).expect("below 12000");
        if !given.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            given.push(p);
            return p;
        }
    }
    panic!("no free port in 20000..32000");
}
