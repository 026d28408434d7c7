//! Many kept runs without taking many backups: copies of one genuine run
//! under new run_ids, each with a manifest naming its run, an hour older
//! than the one before, signed with the daemon's own key. `list` shows them
//! complete and `verify` passes them, so they are what the daemon would
//! have written over that many hours.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use cutter_core::manifest::Manifest;
use cutter_core::signer::Signer;
use cutter_core::time::{parse_rfc3339, rfc3339};

/// Writes `bytes` as a new 0600 file, as the daemon's files are.
fn write_new(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(bytes)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Adds `count` runs `<prefix>-000000`… to `backups`, copies of the run
/// `seed`, signed with the key at `<work>/signer/manifest-signing-key.asc`
/// (where the harness's daemon keeps it). Returns their run_ids.
pub fn keep_copies(
    work: &Path,
    backups: &Path,
    seed: &str,
    prefix: &str,
    count: usize,
) -> Vec<String> {
    let signer = Signer::load_or_create(
        &work.join("signer").join("manifest-signing-key.asc"),
        backups,
    )
    .expect("the daemon's signing key");
    let artifact = std::fs::read(backups.join(format!("{seed}.sql.gpg"))).expect("seed artifact");
    let manifest = Manifest::parse(
        &std::fs::read(backups.join(format!("{seed}.manifest.json"))).expect("seed manifest"),
    )
    .expect("seed manifest parses");
    let at = parse_rfc3339(&manifest.created_at).expect("seed created_at");
    (0..count)
        .map(|i| {
            let run_id = format!("{prefix}-{i:06}");
            let hours_before = u64::try_from(i + 1).unwrap_or(u64::MAX) * 3600;
            let m = Manifest {
                run_id: run_id.clone(),
                artifact: format!("{run_id}.sql.gpg"),
                created_at: rfc3339(at - Duration::from_secs(hours_before)),
                ..manifest.clone()
            };
            let bytes = m.to_bytes().expect("manifest bytes");
            let sig = signer.sign(&bytes).expect("sign");
            write_new(&backups.join(&m.artifact), &artifact);
            write_new(&backups.join(format!("{run_id}.manifest.json.sig")), &sig);
            write_new(&backups.join(format!("{run_id}.manifest.json")), &bytes);
            run_id
        })
        .collect()
}
