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

/// The layers of the crate, lowest first: ARCHITECTURE.md's "Layers" list is this list.
///
/// A file belongs to the longest entry that prefixes its module path (`random/seed_generator.rs` to
/// `random::seed_generator`, `random/threefry.rs` to `random`). It may import, through a `crate::` path, its
/// own entry and the entries of lower layers only. Entries that share a layer may not import each other
/// (strict: no entry here is allowed to). `lib.rs`, which declares and re-exports everything, is outside.
const LAYERS: &[&[&str]] = &[
    &["base"],
    &["error"],
    &["dtype"],
    &["kernels"],
    &["tensor"],
    &["ops"],
    &["constraint", "regularizer"],
    &["random"],
    &["init"],
    &["variable"],
    &["store"],
    &["scope"],
    &["random::seed_generator"],
    &["grad"],
    &["layers"],
    &["checkpoint"],
    &["trainer"],
    &["optim", "losses", "replica"],
];

/// The entry of `module` (a `::` path) in [`LAYERS`] and its layer: the longest entry that prefixes it.
fn layer_of(module: &str) -> Option<(&'static str, usize)> {
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, layer)| layer.iter().map(move |&m| (m, i)))
        .filter(|(m, _)| module == *m || module.starts_with(&format!("{m}::")))
        .max_by_key(|(m, _)| m.len())
}

/// The module path of a file under src/ (`store/mod.rs` -> `store`, `random/sample.rs` -> `random::sample`).
fn module_of_file(path: &str) -> String {
    let path = path.trim_end_matches(".rs").trim_end_matches("/mod");
    path.replace('/', "::")
}

/// Root names that `lib.rs` re-exports (`crate::DType`), mapped to the module they come from.
fn root_reexports(lib: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in lib.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("pub use ") else { continue };
        let rest = rest.trim_end_matches(';');
        let Some((module, names)) = rest.split_once("::") else { continue };
        for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            let name = name.trim().rsplit("::").next().unwrap_or("").trim();
            if !name.is_empty() {
                out.push((name.to_string(), module.to_string()));
            }
        }
    }
    out
}

/// Every `crate::` path in `text` outside comments, as the module path it names (braces expanded one level:
/// `crate::{a::X, b}` gives `a::X` and `b`).
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let code = code.split(" //").next().unwrap_or(code);
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(inner) = after.strip_prefix('{') {
                let end = inner.find('}').unwrap_or(inner.len());
                for part in inner[..end].split(',') {
                    let part: String =
                        part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                    if !part.is_empty() {
                        out.push((n + 1, part));
                    }
                }
            } else {
                let path: String =
                    after.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                out.push((n + 1, path.trim_end_matches(':').to_string()));
            }
            rest = after;
        }
    }
    out
}

/// Every import in `files` (path under src/, text) that reaches above the importing file's layer, as a
/// readable line.
fn upward_imports(files: &[(String, String)], lib: &str) -> Vec<String> {
    let roots = root_reexports(lib);
    let mut bad = Vec::new();
    for (path, text) in files {
        if path == "lib.rs" {
            continue;
        }
        let from = module_of_file(path);
        let Some((from_entry, from_layer)) = layer_of(&from) else {
            bad.push(format!("src/{path}: module `{from}` is in no layer of tidy.rs's LAYERS"));
            continue;
        };
        for (line, target) in crate_paths(text) {
            let first = target.split("::").next().unwrap_or("");
            let target = match roots.iter().find(|(name, _)| name == first) {
                Some((_, module)) => module.clone(),
                None => target,
            };
            let Some((to_entry, to_layer)) = layer_of(&target) else { continue };
            if to_entry == from_entry || to_layer < from_layer {
                continue;
            }
            let how = if to_layer == from_layer { "the same layer as" } else { "a layer above" };
            bad.push(format!(
                "src/{path}:{line}: `{from_entry}` (layer {from_layer}) imports `crate::{target}`: `{to_entry}` is in {how} it (layer {to_layer})"
            ));
        }
    }
    bad
}

#[test]
fn imports_run_down_the_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = fs::read_to_string(root.join("lib.rs")).unwrap();
    let bad = upward_imports(&sources(), &lib);
    assert!(
        bad.is_empty(),
        "imports against the layer order (see LAYERS in tests/integration/tidy.rs):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_layering_check_sees_an_upward_import() {
    let files = vec![
        ("tensor/mod.rs".to_string(), "//! x\nuse crate::grad::Tape;\n// use crate::trainer::X;\n".to_string()),
        (
            "ops/arith.rs".to_string(),
            "use crate::{tensor::Tensor, store::StateStore};\nuse crate::DType;\n".to_string(),
        ),
        ("constraint.rs".to_string(), "fn f() { crate::regularizer::L2::new(); }".to_string()),
        ("optim/sgd.rs".to_string(), "use crate::grad::Grads;\nuse crate::ops::binary;\n".to_string()),
    ];
    let bad = upward_imports(&files, "pub use dtype::DType;\npub use store::{Fingerprint, StateStore};\n");
    assert_eq!(bad.len(), 3, "{bad:#?}");
    assert!(bad[0].starts_with("src/tensor/mod.rs:2: `tensor`"), "{}", bad[0]);
    assert!(bad[0].contains("`crate::grad::Tape`") && bad[0].contains("a layer above"), "{}", bad[0]);
    assert!(bad[1].contains("src/ops/arith.rs:1") && bad[1].contains("`store`"), "{}", bad[1]);
    assert!(bad[2].contains("`regularizer` is in the same layer as it"), "{}", bad[2]);
}

/// The layer list in ARCHITECTURE.md is this test's list.
#[test]
fn architecture_md_shows_the_layers() {
    let md = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md")).unwrap();
    let shown: Vec<String> = LAYERS
        .iter()
        .enumerate()
        .map(|(i, layer)| format!("{i}. {}", layer.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")))
        .collect();
    let block = shown.join("\n");
    assert!(md.contains(&block), "ARCHITECTURE.md's layer list should read:\n{block}");
}

/// The sibling files (`super::name`, `crate::module::name`) that a file of a directory module names, outside
/// comments and before its `#[cfg(test)]` module.
fn sibling_imports(dir: &str, text: &str, siblings: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let module = dir.replace('/', "::");
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        for prefix in ["super::".to_string(), format!("crate::{module}::")] {
            let mut rest = code;
            while let Some(at) = rest.find(&prefix) {
                let after = &rest[at + prefix.len()..];
                let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if siblings.contains(&name) && !out.contains(&name) {
                    out.push(name);
                }
                rest = after;
            }
        }
    }
    out
}

/// No two files of one module import each other (as `kernels/buffer.rs` and `kernels/unary.rs` once did).
#[test]
fn no_two_files_of_a_module_import_each_other() {
    let files = sources();
    let mut bad = Vec::new();
    for (path, text) in &files {
        let Some((dir, file)) = path.rsplit_once('/') else { continue };
        let name = file.trim_end_matches(".rs");
        if name == "mod" {
            continue;
        }
        let siblings: Vec<String> = files
            .iter()
            .filter_map(|(p, _)| p.strip_prefix(&format!("{dir}/")))
            .filter(|f| !f.contains('/') && *f != "mod.rs")
            .map(|f| f.trim_end_matches(".rs").to_string())
            .filter(|f| f != name)
            .collect();
        for other in sibling_imports(dir, text, &siblings) {
            let back = files.iter().find(|(p, _)| *p == format!("{dir}/{other}.rs")).map(|(_, t)| t).unwrap();
            if sibling_imports(dir, back, &[name.to_string()]).contains(&name.to_string()) && name < other.as_str() {
                bad.push(format!("src/{dir}/{name}.rs and src/{dir}/{other}.rs import each other"));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// The crate denies `unsafe_code`; the two exceptions are audited: the call into the `gemm` crate, and the call of
// the AVX2 + FMA loop function after the CPU check in `kernels::simd`.
#[test]
fn only_the_gemm_kernel_and_the_simd_dispatch_contain_unsafe() {
    for (path, text) in sources() {
        if path == "kernels/gemm.rs" || path == "kernels/simd.rs" {
            assert_eq!(text.matches("unsafe {").count(), 1, "src/{path}: exactly one unsafe block");
            assert!(text.contains("// SAFETY:"), "src/{path}: the unsafe block has no SAFETY argument");
            continue;
        }
        assert!(!text.contains("unsafe"), "src/{path} contains `unsafe`");
    }
    let manifest = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    assert!(manifest.contains("unsafe_code = \"deny\""), "Cargo.toml no longer denies unsafe_code");
}
