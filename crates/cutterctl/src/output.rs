//! What cutterctl prints: text for people, `--json` for scripts.

use std::io::Write;
use std::process::ExitCode;

use cutter_backup::v1::{
    ArtifactState, BackupEnvelope, ListReply, Location, PruneAction, PruneDecision, PruneReply,
    SelftestReport, SignerInfo, StatusReport, VerifyReply, check,
};
use serde_json::json;

use crate::{EXIT_FAILED, EXIT_UNREACHABLE};

fn status_word(s: i32) -> &'static str {
    match check::Status::try_from(s) {
        Ok(check::Status::Pass) => "PASS",
        Ok(check::Status::Warn) => "WARN",
        Ok(check::Status::Fail) => "FAIL",
        _ => "UNKNOWN",
    }
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// `SELFTEST: PASS|FAIL`, then one line per check.
pub fn selftest(r: &SelftestReport, as_json: bool) -> ExitCode {
    if as_json {
        print_json(r);
    } else {
        println!("SELFTEST: {}", if r.passed { "PASS" } else { "FAIL" });
        for c in &r.checks {
            println!(
                "  {:<4}  {:<12} {}",
                status_word(c.status),
                clean(&c.name),
                clean(&c.detail)
            );
        }
    }
    exit(r.passed)
}

/// The daemon's status.
pub fn status(s: &StatusReport, as_json: bool) -> ExitCode {
    if as_json {
        print_json(s);
        return ExitCode::SUCCESS;
    }
    let commit: String = s.source_commit.chars().take(12).collect();
    println!(
        "cutter-backupd {} (commit {commit}), up {}s",
        s.version, s.uptime_seconds
    );
    println!("readiness:   {}", clean(&s.summary));
    if !s.signer_fpr.is_empty() {
        println!(
            "signer:      …{} (manifests signed; pin it: cutterctl signer export > FILE)",
            s.signer_fpr.get(32..).unwrap_or(&s.signer_fpr)
        );
    }
    let tail = if s.key_fpr_tail.is_empty() {
        "unset".to_owned()
    } else {
        format!("…{}", s.key_fpr_tail)
    };
    let expiry = if s.key_expires_at.is_empty() {
        "no expiry known".to_owned()
    } else {
        format!("expires {}", s.key_expires_at)
    };
    println!("key:         {tail}, {expiry}");
    match &s.last_backup {
        Some(b) => println!(
            "last backup: {} at {} ({}, sha256 {}…)",
            clean(&b.run_id),
            clean(&b.created_at),
            human_bytes(b.size_bytes),
            clean(b.sha256.get(..12).unwrap_or(&b.sha256))
        ),
        None => println!("last backup: none"),
    }
    println!(
        "artifacts:   {} ({}) in {}, {} free",
        s.artifact_count,
        human_bytes(s.artifact_bytes),
        s.backup_dir,
        human_bytes(s.disk_free_bytes)
    );
    println!("tables:      {} in scope", s.tables_in_scope);
    if !s.offsite_mode.is_empty() {
        let mut line = format!(
            "offsite:     mode {}, {} upload(s) pending",
            clean(&s.offsite_mode),
            s.offsite_pending
        );
        if s.offsite_pending > 0 {
            line.push_str(&format!(", oldest {} s", s.offsite_oldest_pending_secs));
        }
        if !s.offsite_last_error.is_empty() {
            line.push_str(&format!(", last error: {}", clean(&s.offsite_last_error)));
        }
        println!("{line}");
    }
    ExitCode::SUCCESS
}

/// The envelope as JSON; non-zero when any of the four COMPLETE fields is empty.
pub fn envelope(e: &BackupEnvelope) -> ExitCode {
    print_json(e);
    let missing = incomplete_fields(e);
    if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "cutterctl: INCOMPLETE envelope (empty: {}): treat the backup as failed",
            missing.join(", ")
        );
        ExitCode::from(EXIT_FAILED)
    }
}

/// Which of the four COMPLETE fields are empty.
pub fn incomplete_fields(e: &BackupEnvelope) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if e.sha256.len() != 64 {
        missing.push("sha256");
    }
    if e.size_bytes == 0 {
        missing.push("size_bytes");
    }
    if e.gpg_fpr.len() != 40 {
        missing.push("gpg_fpr");
    }
    if e.artifact_ref.is_empty() {
        missing.push("artifact_ref");
    }
    missing
}

/// The backups, newest first, a line at a time through one buffer (not a
/// write per line: 10,000 runs are 10,000 lines). A reader that goes away
/// (`| head`) ends it quietly.
pub fn list(r: &ListReply, as_json: bool) -> ExitCode {
    if as_json {
        print_json(r);
        return ExitCode::SUCCESS;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match list_text(r, &mut out).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cutterctl: cannot print the list: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn list_text(r: &ListReply, out: &mut impl Write) -> std::io::Result<()> {
    let offsite = r
        .artifacts
        .iter()
        .any(|a| a.location() != Location::Unspecified);
    writeln!(
        out,
        "{:<32} {:<20} {:>10} {:<12} {:<18} {:>9}  {}state",
        "run_id",
        "created_at",
        "size",
        "sha256",
        "needs key",
        "rows",
        if offsite { "where   " } else { "" }
    )?;
    for a in &r.artifacts {
        let keys: Vec<String> = a
            .key_fprs
            .iter()
            .map(|f| format!("…{}", clean(f.get(32..).unwrap_or(f))))
            .collect();
        // A daemon one version older fills only the deprecated string.
        #[allow(deprecated)]
        let word = match a.artifact_state() {
            ArtifactState::Unspecified => a.state.clone(),
            st => short_name(st.as_str_name(), "ARTIFACT_STATE_"),
        };
        let state = match (a.pinned, a.detail.is_empty()) {
            (true, true) => format!("{word} (pinned)"),
            (true, false) => format!("{word} (pinned): {}", clean(&a.detail)),
            (false, true) => word,
            (false, false) => format!("{word}: {}", clean(&a.detail)),
        };
        let state = match a.offsite_detail.is_empty() {
            true => state,
            false => format!("{state} [offsite: {}]", clean(&a.offsite_detail)),
        };
        let place = match a.location() {
            Location::Unspecified => String::new(),
            l => format!("{:<8}", short_name(l.as_str_name(), "LOCATION_")),
        };
        writeln!(
            out,
            "{:<32} {:<20} {:>10} {:<12} {:<18} {:>9}  {place}{state}",
            clean(&a.run_id),
            clean(&a.created_at),
            human_bytes(a.size_bytes),
            clean(a.sha256.get(..12).unwrap_or(&a.sha256)),
            keys.join(","),
            a.total_rows,
        )?;
    }
    Ok(())
}

/// OK / FAILED per artifact; exit 1 when any FAILED.
pub fn verify(r: &VerifyReply, as_json: bool) -> ExitCode {
    if as_json {
        print_json(r);
    } else {
        for v in &r.results {
            if v.ok && v.reason.is_empty() {
                println!("OK      {}", clean(&v.run_id));
            } else if v.ok {
                println!(
                    "OK      {} (WARNING: {})",
                    clean(&v.run_id),
                    clean(&v.reason)
                );
            } else {
                println!("FAILED  {}: {}", clean(&v.run_id), clean(&v.reason));
            }
        }
    }
    exit(r.results.iter().all(|v| v.ok))
}

/// The signer cert, armored (or as JSON with its fingerprint).
pub fn signer(s: &SignerInfo, as_json: bool) -> ExitCode {
    if as_json {
        print_json(s);
    } else {
        print!("{}", s.cert_armored);
    }
    ExitCode::SUCCESS
}

/// What prune did or would do.
pub fn prune(r: &PruneReply, as_json: bool) -> ExitCode {
    if as_json {
        print_json(r);
        return ExitCode::SUCCESS;
    }
    let verb = if r.applied { "deleted" } else { "would delete" };
    for d in &r.decisions {
        let action = match (prune_action(d), r.applied) {
            (PruneAction::Delete, true) => "DELETED",
            (PruneAction::Delete, false) => "DELETE?",
            (PruneAction::Keep, _) => "keep",
            _ => "LEAVE",
        };
        println!("{action:<8} {:<32} {}", clean(&d.run_id), clean(&d.reason));
    }
    let freed: u64 = r
        .decisions
        .iter()
        .filter(|d| prune_action(d) == PruneAction::Delete)
        .map(|d| d.size_bytes)
        .sum();
    let n = r
        .decisions
        .iter()
        .filter(|d| prune_action(d) == PruneAction::Delete)
        .count();
    println!(
        "{verb} {n} backup(s), {} (keep_last = {}, keep_days = {}){}",
        human_bytes(freed),
        r.keep_last,
        r.keep_days,
        if r.applied {
            ""
        } else {
            "; dry run: pass --confirm to delete"
        }
    );
    ExitCode::SUCCESS
}

/// Prints a reply as JSON: the generated type itself, so every field of the
/// contract is there.
fn print_json<T: serde::Serialize>(reply: &T) {
    // Written as it is serialised, through one buffer (a list of 10,000
    // runs is megabytes: no second copy of it as a string).
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = serde_json::to_writer(&mut out, reply)
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => eprintln!("cutterctl: cannot print JSON: {e}"),
    }
}

/// A gRPC error, with its code, on stderr (and as JSON on stdout with --json).
pub fn rpc_error(s: &tonic::Status, as_json: bool) -> ExitCode {
    let unreachable = s.code() == tonic::Code::Unavailable && s.message().contains("transport");
    if as_json {
        println!(
            "{}",
            json!({"error": {"code": format!("{:?}", s.code()), "message": s.message()}})
        );
    }
    eprintln!("cutterctl: {:?}: {}", s.code(), clean(s.message()));
    if unreachable {
        ExitCode::from(EXIT_UNREACHABLE)
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// The decision's action; from the deprecated string when an older daemon
/// left the enum unset.
#[allow(deprecated)]
fn prune_action(d: &PruneDecision) -> PruneAction {
    match (d.prune_action(), d.action.as_str()) {
        (PruneAction::Unspecified, "keep") => PruneAction::Keep,
        (PruneAction::Unspecified, "delete") => PruneAction::Delete,
        (PruneAction::Unspecified, "leave") => PruneAction::Leave,
        (a, _) => a,
    }
}

/// `ARTIFACT_STATE_COMPLETE` → `complete`.
fn short_name(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// Text from the daemon or a file as a terminal may show it: control
/// characters (escape sequences, carriage returns) are escaped, so a planted
/// name cannot rewrite the screen.
pub fn clean(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("r1\u{1b}[2Jx\r"), "r1\\u{1b}[2Jx\\r");
        assert_eq!(clean("plain …1A2B"), "plain …1A2B");
    }

    #[test]
    fn any_empty_complete_field_makes_the_envelope_incomplete() {
        let full = BackupEnvelope {
            sha256: "a".repeat(64),
            size_bytes: 10,
            gpg_fpr: "F".repeat(40),
            artifact_ref: "/x.sql.gpg".into(),
            ..Default::default()
        };
        assert!(incomplete_fields(&full).is_empty());
        let cases: [(&str, BackupEnvelope); 4] = [
            (
                "sha256",
                BackupEnvelope {
                    sha256: String::new(),
                    ..full.clone()
                },
            ),
            (
                "size_bytes",
                BackupEnvelope {
                    size_bytes: 0,
                    ..full.clone()
                },
            ),
            (
                "gpg_fpr",
                BackupEnvelope {
                    gpg_fpr: String::new(),
                    ..full.clone()
                },
            ),
            (
                "artifact_ref",
                BackupEnvelope {
                    artifact_ref: String::new(),
                    ..full.clone()
                },
            ),
        ];
        for (field, e) in cases {
            assert_eq!(incomplete_fields(&e), [field]);
        }
    }
}
