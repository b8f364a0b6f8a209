//! Replays the fuzz corpora and every reproducer the fuzzers found (`fuzz/corpus/<target>/`,
//! `fuzz/artifacts/<target>/`) through the library's fuzz entry points, on stable: a
//! regression of a fixed bug fails `cargo test`, not only a nightly fuzzing run.

use snapvisor_vmm::fuzzing::{target, TARGETS};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_target_has_a_corpus_and_a_fuzz_binary() {
    let toml = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in TARGETS {
        assert!(!files(&fuzz_dir().join("corpus").join(name)).is_empty(), "no corpus for `{name}`");
        assert!(toml.contains(&format!("name = \"{name}\"")), "no fuzz binary for `{name}`");
        assert!(fuzz_dir().join("fuzz_targets").join(format!("{name}.rs")).exists(), "no fuzz target `{name}`");
    }
}

#[test]
fn corpora_and_reproducers_replay_cleanly() {
    let mut replayed = 0;
    for kind in ["corpus", "artifacts"] {
        let Ok(dirs) = std::fs::read_dir(fuzz_dir().join(kind)) else { continue };
        for dir in dirs.flatten() {
            let name = dir.file_name().to_string_lossy().into_owned();
            let run = target(&name).unwrap_or_else(|| panic!("fuzz/{kind}/{name}: no such target"));
            for file in files(&dir.path()) {
                let data = std::fs::read(&file).unwrap();
                // A panic here names the file: `cargo +nightly fuzz run <target> <file>` reproduces it.
                eprintln!("replaying {}", file.display());
                run(&data);
                replayed += 1;
            }
        }
    }
    assert!(replayed >= TARGETS.len(), "only {replayed} inputs replayed");
}
