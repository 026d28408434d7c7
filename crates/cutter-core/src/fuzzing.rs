//! The fuzz targets' bodies, shared by `fuzz/` (cargo fuzz, libFuzzer) and
//! by the corpus replay test (`tests/fuzz_corpus.rs`), which runs every file
//! of `fuzz/corpus/<target>/` through the same function in the normal test
//! suite, so CI needs no nightly toolchain. Each body feeds untrusted bytes
//! to a parser and checks a property that must hold for any input (beyond
//! not panicking): a round trip, or an answer that does not depend on how
//! a stream is cut.

use std::io::Cursor;

use crate::config::{Config, parse_env};
use crate::copyrows::CopyRows;
use crate::manifest::Manifest;
use crate::runid::RunId;

/// A target's body.
pub type Target = fn(&[u8]);

/// The targets, by name (the directory names under `fuzz/corpus/`).
pub const TARGETS: [(&str, Target); 5] = [
    ("config", config),
    ("run_id", run_id),
    ("manifest", manifest),
    ("copy_rows", copy_rows),
    ("structure", structure),
];

/// The config file (TOML) before the first NUL byte, the env file after it.
pub fn config(data: &[u8]) {
    let (toml, env) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(text) = std::str::from_utf8(toml)
        && let Ok(cfg) = Config::from_toml(text)
    {
        // What validation promised holds.
        assert!(!cfg.backup.tables.is_empty());
        assert!(cfg.tables().is_ok());
        assert!(cfg.server.max_connections > 0);
    }
    let vars = parse_env(&String::from_utf8_lossy(env));
    for (k, v) in &vars {
        assert!(!k.contains('\n') && !v.contains('\n'), "{k:?}={v:?}");
    }
}

/// run_id validation: what passes is a safe file-name stem.
pub fn run_id(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = RunId::parse(text) {
        let s = id.as_str();
        assert_eq!(s, text);
        assert!(!s.is_empty() && s.len() <= crate::runid::MAX_LEN);
        assert!(!s.starts_with('.'), "{s:?}");
        assert!(!s.contains('/') && !s.contains('\0') && s != "..", "{s:?}");
    }
}

/// The manifest parser: what parses serializes and parses back the same.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::parse(data) {
        let bytes = m.to_bytes().expect("a parsed manifest serializes");
        let again = Manifest::parse(&bytes).expect("a serialized manifest parses");
        assert_eq!(m, again);
    }
}

/// The COPY-block row counter: the first byte picks a chunk size, and the
/// counts must not depend on where the stream is cut.
pub fn copy_rows(data: &[u8]) {
    let Some((&first, dump)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    let mut whole = CopyRows::default();
    whole.feed(dump);
    let mut cut = CopyRows::default();
    for part in dump.chunks(chunk) {
        cut.feed(part);
    }
    assert_eq!(whole.finish(), cut.finish(), "chunk size {chunk}");
}

/// The OpenPGP structure check `verify` runs on an artifact, against a
/// manifest that names one recipient key.
pub fn structure(data: &[u8]) {
    let manifest = Manifest {
        format: crate::manifest::FORMAT,
        run_id: "fuzz".into(),
        created_at: String::new(),
        artifact: "fuzz.sql.gpg".into(),
        sha256: String::new(),
        size_bytes: 0,
        gpg_fpr: String::new(),
        recipients: vec![crate::manifest::Recipient {
            fingerprint: String::new(),
            encryption_keys: vec!["0123456789ABCDEF0123456789ABCDEF01234567".into()],
        }],
        tables: Vec::new(),
        plaintext_bytes: 0,
        compression: "none".into(),
        server_version: String::new(),
        pg_dump_version: String::new(),
        producer: String::new(),
        duration_ms: 0,
    };
    let _ = crate::verify::check_structure(Cursor::new(data.to_vec()), &manifest);
}
