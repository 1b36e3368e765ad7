//! Invariants of the source tree, checked by `cargo test` (rust-analyzer's tidy test).

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
            (rel, fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn every_source_file_opens_with_module_docs() {
    for (path, text) in sources() {
        assert!(text.starts_with("//!"), "src/{path} does not open with a `//!` doc comment");
    }
}

#[test]
fn only_kernels_use_rayon() {
    for (path, text) in sources() {
        if path.starts_with("kernels/") {
            continue;
        }
        assert!(!text.contains("use rayon") && !text.contains("rayon::"), "src/{path} names rayon outside kernels/");
    }
}

#[test]
fn only_checkpoint_and_runs_touch_the_file_system() {
    for (path, text) in sources() {
        if path.starts_with("checkpoint/") || path.starts_with("trainer/run/") {
            continue;
        }
        assert!(!text.contains("std::fs"), "src/{path} uses std::fs outside checkpoint/ and trainer/run/");
    }
}

#[test]
fn only_mpi_module_uses_mpi() {
    for (path, text) in sources() {
        if path == "replica/mpi.rs" {
            continue;
        }
        assert!(!text.contains("use mpi"), "src/{path} uses mpi outside replica/mpi.rs");
    }
}
