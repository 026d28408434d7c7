//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and any
//! saved crash inputs (`fuzz/artifacts/<target>/`) through the same target
//! bodies cargo fuzz runs (`cutter_core::fuzzing`), so every input the
//! fuzzer found interesting stays a regression test on stable Rust.

use std::path::PathBuf;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[test]
fn every_corpus_input_passes_its_target() {
    for (name, target) in cutter_core::fuzzing::TARGETS {
        let mut replayed = 0;
        for kind in ["corpus", "artifacts"] {
            let dir = fuzz_dir().join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                assert!(kind == "artifacts", "{} is missing", dir.display());
                continue;
            };
            for entry in entries {
                let path = entry.expect("corpus entry").path();
                let data = std::fs::read(&path).expect("corpus file");
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} fails", path.display());
                replayed += 1;
            }
        }
        assert!(replayed > 0, "the {name} corpus is empty");
    }
}
