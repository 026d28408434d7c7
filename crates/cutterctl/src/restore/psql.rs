//! psql, the loader of a restore's authenticated dump stream and of
//! nothing else (cutterctl writes no SQL of its own into psql), boxed in:
//! - no `PG*` variable from the operator's shell reaches it, and it gets
//!   one explicit conninfo, so PGSERVICE or PGHOSTADDR cannot send it
//!   elsewhere;
//! - the dump is loaded as a non-superuser role that owns the scratch
//!   database (no `COPY … TO PROGRAM`, no roles, no other databases), with
//!   `search_path`, `standard_conforming_strings` and `client_encoding` set
//!   as startup options;
//! - the stream starts with `\restrict <key>` (a key only this process
//!   knows), so no psql meta-command in it runs (`\!`, `\o`, `\copy` …);
//! - stdin is written and stdout/stderr are read at once, so a chatty psql
//!   cannot deadlock the restore.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail};
use cutter_core::db::{ConnTarget, clear_pg_env};

use super::scratch::random_token;
use crate::output::clean;

/// psql as the loader of one authenticated dump stream, and nothing else:
/// cutterctl's own admin and count work goes through sqlx (`scratch.rs`).
pub struct Loader {
    bin: PathBuf,
}

impl Loader {
    /// Checks that this psql knows `\restrict`.
    pub fn new(bin: Option<PathBuf>) -> anyhow::Result<Self> {
        let bin = bin.unwrap_or_else(default_psql);
        // Root runs it: it must be root's, like every program root runs here.
        let bin = cutter_core::trusted::program(&bin, "psql").map_err(anyhow::Error::msg)?;
        check_version(&bin)?;
        Ok(Self { bin })
    }

    /// psql on `server`'s host, port and TLS settings, `database` as
    /// `user`. Sessions start with `search_path=pg_catalog` (startup
    /// options outrank database and role settings) and the string and
    /// encoding settings the dump is written for.
    fn cmd(&self, server: &ConnTarget, database: &str, user: &str) -> Command {
        let mut c = Command::new(&self.bin);
        clear_pg_env(&mut c);
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!(
                "{} options='-c search_path=pg_catalog -c standard_conforming_strings=on -c client_encoding=UTF8'",
                server.conninfo(database, user)
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Loads the authenticated plaintext in one transaction as the load
    /// role, in restricted mode (`\restrict` with a key only this process
    /// knows, the dump's own `\restrict` lines dropped).
    pub fn load(
        &self,
        server: &ConnTarget,
        role: &str,
        password: &str,
        plain: File,
    ) -> anyhow::Result<()> {
        let key = random_token()?;
        let mut c = self.cmd(server, &server.database, role);
        // `-f -`: psql's --single-transaction only wraps -f/-c input.
        c.args(["--single-transaction", "-f", "-"])
            .env("PGPASSWORD", password)
            .stdout(Stdio::null());
        let input = Restricted::new(&key, BufReader::with_capacity(1 << 20, plain));
        let out = run(&self.bin, c, input)?;
        if !out.status.success() {
            bail!(
                "psql could not load the dump (nothing was committed): {}",
                clean(&String::from_utf8_lossy(&out.stderr)).trim()
            );
        }
        Ok(())
    }
}

/// Runs `cmd` feeding it `input` from a thread while its output is read.
fn run(bin: &Path, mut cmd: Command, input: impl Read + Send + 'static) -> anyhow::Result<Output> {
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", bin.display()))?;
    let mut stdin = child.stdin.take().context("psql stdin")?;
    let writer = std::thread::spawn(move || {
        let mut input = input;
        // psql stopping early (ON_ERROR_STOP) closes the pipe: not our error.
        let _ = std::io::copy(&mut input, &mut stdin);
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok(out)
}

/// The dump with `\restrict <key>` in front. pg_dump's own
/// `\restrict`/`\unrestrict` lines (outside COPY data) are dropped: psql
/// refuses every meta-command once restricted, and a line that is data
/// inside a COPY block passes untouched.
struct Restricted<R> {
    inner: R,
    pending: Vec<u8>,
    pos: usize,
    in_copy: bool,
    line: Vec<u8>,
    /// Where the SQL outside COPY blocks is: a header-looking line inside
    /// a comment's string is not a COPY (it would hide the dump's own
    /// `\unrestrict` from the filter, failing an honest restore).
    sql: cutter_core::sqllex::SqlLexer,
}

impl<R: BufRead> Restricted<R> {
    fn new(key: &str, inner: R) -> Self {
        Self {
            inner,
            pending: format!("\\restrict {key}\n").into_bytes(),
            pos: 0,
            in_copy: false,
            line: Vec::new(),
            sql: cutter_core::sqllex::SqlLexer::new(),
        }
    }

    /// The next line to pass on, or `None` at the end.
    fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            self.line.clear();
            if self.inner.read_until(b'\n', &mut self.line)? == 0 {
                return Ok(None);
            }
            let text = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if self.in_copy {
                self.in_copy = text != b"\\.";
            } else {
                self.sql.feed(&self.line);
                let top = self.sql.line_began_at_top();
                if top && is_copy_from_stdin(text) {
                    self.in_copy = true;
                } else if top && is_restrict_line(text) {
                    continue;
                }
            }
            return Ok(Some(std::mem::take(&mut self.line)));
        }
    }
}

fn is_copy_from_stdin(text: &[u8]) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.starts_with(b"copy ") && lower.ends_with(b" from stdin;")
}

fn is_restrict_line(text: &[u8]) -> bool {
    let rest = text
        .strip_prefix(b"\\restrict ")
        .or_else(|| text.strip_prefix(b"\\unrestrict "));
    rest.is_some_and(|k| !k.is_empty() && k.iter().all(u8::is_ascii_alphanumeric))
}

impl<R: BufRead> Read for Restricted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.pending.len() {
            match self.next_line()? {
                Some(line) => {
                    self.pending = line;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// psql learnt `\restrict` in 13.22, 14.19, 15.14, 16.10 and 17.6.
fn check_version(bin: &Path) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "running {} --version (install postgresql-client)",
                bin.display()
            )
        })?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let version = line
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let needed = match major {
        13 => Some(22),
        14 => Some(19),
        15 => Some(14),
        16 => Some(10),
        17 => Some(6),
        m if m >= 18 => None,
        _ => Some(u32::MAX),
    };
    if needed.is_some_and(|n| minor < n) {
        bail!(
            "{} is {line:?}: restore needs a psql with \\restrict (13.22, 14.19, 15.14, 16.10, 17.6 or newer) so the dump cannot run psql commands; upgrade postgresql-client",
            bin.display()
        );
    }
    Ok(())
}

fn default_psql() -> PathBuf {
    cutter_core::pgdump::newest_bindir()
        .map(|d| d.join("psql"))
        .unwrap_or_else(|| PathBuf::from("psql"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filtered(dump: &str) -> String {
        let mut out = String::new();
        Restricted::new("KEY1", BufReader::new(dump.as_bytes()))
            .read_to_string(&mut out)
            .expect("read");
        out
    }

    #[test]
    fn the_loader_session_fixes_its_settings_and_gets_one_conninfo() {
        let target = ConnTarget::parse("postgres://root@/scratch?host=/run/postgresql", None)
            .expect("target");
        let loader = Loader {
            bin: PathBuf::from("psql"),
        };
        let c = loader.cmd(&target, "scratch", "cutter_restore");
        let conninfo = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .find(|a| a.starts_with("host="))
            .expect("a conninfo argument");
        assert!(
            conninfo.starts_with(
                "host='/run/postgresql' port=5432 dbname='scratch' user='cutter_restore'"
            ),
            "{conninfo}"
        );
        assert!(
            conninfo.ends_with("options='-c search_path=pg_catalog -c standard_conforming_strings=on -c client_encoding=UTF8'"),
            "{conninfo}"
        );
    }

    #[test]
    fn a_copy_lookalike_inside_a_string_does_not_hide_the_dumps_unrestrict() {
        let dump = "COMMENT ON TABLE s.a IS 'x\ncopy x from stdin;\n';\n\\unrestrict abc\n";
        assert_eq!(
            filtered(dump),
            "\\restrict KEY1\nCOMMENT ON TABLE s.a IS 'x\ncopy x from stdin;\n';\n"
        );
    }

    #[test]
    fn the_stream_is_restricted_and_the_dumps_own_restrict_lines_go() {
        let dump = "--\n\\restrict abc\nSET x = 1;\nCOPY s.t (a) FROM stdin;\n\\restrict notmeta\n\\.\n\\! id\n\\unrestrict abc\n";
        assert_eq!(
            filtered(dump),
            "\\restrict KEY1\n--\nSET x = 1;\nCOPY s.t (a) FROM stdin;\n\\restrict notmeta\n\\.\n\\! id\n"
        );
    }
}
