//! The operator's shell environment does not choose which certificates
//! cutterctl trusts. `SSL_CERT_FILE` and `SSL_CERT_DIR` replace the system's
//! CA store for the S3 client (rustls-native-certs reads them when the
//! client loads its roots; the client reads no proxy variables) and for
//! OpenSSL, which psql's `sslrootcert=system` uses; whoever can set them
//! could put a TLS man-in-the-middle between `verify --offsite` or
//! `restore --from-offsite` and the bucket. So cutterctl drops them before
//! anything runs, the way restore drops every `PG*` variable before psql.
//!
//! The same goes for every `PG*` variable: cutterctl's own database
//! sessions (sqlx, in `restore`) read PGHOST, PGPASSWORD, PGOPTIONS,
//! PGSSLMODE … for anything the URL leaves out, so they are dropped too;
//! and for `OPENSSL_CONF`, `OPENSSL_MODULES` and `OPENSSL_ENGINES`, which
//! can load a library into a root process.
//!
//! Removing a variable from a running process is `unsafe` (another thread
//! may read the environment at the same time), and this workspace forbids
//! unsafe code: cutterctl re-executes itself once, without them.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The variables that redirect TLS trust away from the system's CA store.
pub const TLS_TRUST_VARS: &[&str] = &["SSL_CERT_FILE", "SSL_CERT_DIR"];

/// OpenSSL's own configuration and module paths: a config that loads a
/// provider loads any shared library into cutterctl (which uses OpenSSL
/// for its random numbers and the load role's SCRAM verifier) and psql.
const OPENSSL_VARS: &[&str] = &["OPENSSL_CONF", "OPENSSL_MODULES", "OPENSSL_ENGINES"];

/// Set for the re-executed cutterctl: which of [`TLS_TRUST_VARS`] it
/// dropped, so a command that goes to the bucket can say so (many hosts
/// set them to the system store itself; other commands stay quiet).
const DROPPED: &str = "CUTTERCTL_DROPPED_TLS_VARS";

/// Returns when none of [`TLS_TRUST_VARS`] and no `PG*` variable is set;
/// otherwise replaces this process with cutterctl itself, same arguments,
/// without them. An error only when that re-exec failed, saying how to run
/// without them.
pub fn drop_overrides() -> Result<(), String> {
    let set: Vec<&str> = TLS_TRUST_VARS
        .iter()
        .copied()
        .filter(|v| std::env::var_os(v).is_some())
        .collect();
    let pg: Vec<OsString> = std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| {
            let k = k.to_string_lossy();
            k.starts_with("PG") || OPENSSL_VARS.contains(&k.as_ref())
        })
        .collect();
    if set.is_empty() && pg.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = set
        .iter()
        .map(|v| (*v).to_owned())
        .chain(pg.iter().map(|v| v.to_string_lossy().into_owned()))
        .collect();
    let unset = names
        .iter()
        .map(|v| format!("-u {v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let refused = |why: String| {
        format!(
            "{} is set, which would let whoever set it choose the certificates cutterctl trusts or the database it connects to, and cutterctl could not restart without it ({why}): run it as `env {unset} cutterctl …`",
            names.join(" and ")
        )
    };
    let exe = std::env::current_exe().map_err(|e| refused(e.to_string()))?;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("cutterctl"));
    let mut again = Command::new(exe);
    again.arg0(arg0).args(args);
    for v in TLS_TRUST_VARS {
        again.env_remove(v);
    }
    for v in &pg {
        again.env_remove(v);
    }
    if !set.is_empty() {
        again.env(DROPPED, set.join(" and "));
    }
    // `exec` returns only when it failed.
    Err(refused(again.exec().to_string()))
}

/// Says, before a client to the bucket is built, which variables were
/// dropped: an operator who set one for a private CA learns why the
/// bucket's certificate is refused.
pub fn note_dropped() {
    if let Some(dropped) = std::env::var_os(DROPPED) {
        eprintln!(
            "cutterctl: ignoring {}: the bucket's certificate is checked against the system's CA store only",
            dropped.to_string_lossy()
        );
    }
}
