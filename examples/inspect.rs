//! List a checkpoint's variables (path, dtype, shape, min/max/mean, finite or not) and its fingerprint; with
//! two files, print what differs. Reads purestate checkpoints and plain safetensors files written by Python.
//!
//! Given a run directory, show the run: versions, tags, records, stored states, bytes on disk and the dedup
//! ratio; with `--verify`, re-hash every object and check the journal, exiting non-zero and naming each
//! problem when anything is damaged.
//!
//! `cargo run --example inspect -- FILE [FILE2]` or `cargo run --example inspect -- DIR [--verify]`

#[path = "common/exit.rs"]
mod exit;
use std::path::Path;

use purestate::trainer::run;
use purestate::{checkpoint, DType, StateStore};

fn inspect_run(dir: &Path, verify: bool) -> Result<(), Box<dyn std::error::Error>> {
    let s = run::summary(dir)?;
    println!(
        "run {}: head v{}, {} versions ({} with records), {} rollbacks",
        dir.display(),
        s.head,
        s.versions,
        s.records,
        s.rollbacks
    );
    // By version, then name: epoch-2 before epoch-10.
    let mut by_version: Vec<&(String, u64)> = s.tags.iter().collect();
    by_version.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let tags: Vec<String> = by_version.iter().map(|(n, v)| format!("{n}=v{v}")).collect();
    println!("tags: {}", if tags.is_empty() { "none".to_string() } else { tags.join(", ") });
    let stored: Vec<String> = s.stored.iter().map(|v| format!("v{v}")).collect();
    println!("stored states ({}): {}", s.stored.len(), stored.join(" "));
    println!(
        "on disk: journal {} bytes, {} objects {} bytes; full copies would take {} bytes: dedup ratio {:.2}x",
        s.journal_bytes,
        s.objects,
        s.object_bytes,
        s.full_copy_bytes,
        s.dedup_ratio()
    );
    if s.torn_bytes > 0 {
        println!("{} bytes after the last durable group (a torn tail, or a group being written)", s.torn_bytes);
    }
    if verify {
        let mut problems: Vec<String> = run::verify(dir)?.iter().map(|p| p.to_string()).collect();
        // The run's own files are checked above; a checkpoint kept in the directory (train's `checkpoints/`)
        // is loaded, which re-hashes it against its recorded fingerprint.
        let checkpoints = safetensors_files(dir)?;
        for file in &checkpoints {
            if let Err(e) = checkpoint::load(file) {
                problems.push(e.to_string());
            }
        }
        if problems.is_empty() {
            println!(
                "verify: every object re-hashed, the journal chain checked, {} checkpoint(s) loaded: no problem",
                checkpoints.len()
            );
        } else {
            for p in &problems {
                println!("problem: {p}");
            }
            return Err(format!("verify: {} problem(s) in {}", problems.len(), dir.display()).into());
        }
    }
    Ok(())
}

/// Every `.safetensors` file under `dir`, in path order.
fn safetensors_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let path = entry.map_err(|e| format!("{}: {e}", d.display()))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|x| x == "safetensors") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn summary(state: &StateStore) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<40} {:<9} {:<14} {:>12} {:>12} {:>12}  finite\n",
        "path", "dtype", "shape", "min", "max", "mean"
    ));
    for (var, value) in state.iter() {
        let values = value.to_f64_vec();
        let (min, max, sum) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY, 0.0), |(lo, hi, s), &x| (lo.min(x), hi.max(x), s + x));
        let mean = if values.is_empty() { f64::NAN } else { sum / values.len() as f64 };
        let finite = !value.dtype().is_float() || value.is_all_finite();
        let shape = var.shape().to_string();
        let fmt = |x: f64| if value.dtype() == DType::Bool { format!("{}", x != 0.0) } else { format!("{x:.5}") };
        out.push_str(&format!(
            "{:<40} {:<9} {:<14} {:>12} {:>12} {:>12}  {}\n",
            var.path(),
            var.dtype().to_string(),
            shape,
            fmt(min),
            fmt(max),
            format!("{mean:.5}"),
            if finite { "yes" } else { "NO" }
        ));
    }
    out
}

fn main() -> std::process::ExitCode {
    exit::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if let Some(dir) = files.first().map(Path::new).filter(|p| p.is_dir()) {
        let verify = match files.get(1).map(String::as_str) {
            None => false,
            Some("--verify") if files.len() == 2 => true,
            _ => return Err("usage: inspect DIR [--verify]".into()),
        };
        return inspect_run(dir, verify);
    }
    if files.is_empty() || files.len() > 2 {
        return Err("usage: inspect FILE [FILE2] | inspect DIR [--verify]".into());
    }
    let first = checkpoint::load(&files[0])?;
    println!("{}: {} variables, floatx {}, fingerprint {}", files[0], first.len(), first.floatx(), first.fingerprint());
    print!("{}", summary(&first));
    if let Some(second_file) = files.get(1) {
        let second = checkpoint::load(second_file)?;
        println!("\n{second_file}: {} variables, fingerprint {}", second.len(), second.fingerprint());
        println!("\ndiff {} -> {second_file}:\n{}", files[0], first.diff(&second));
    }
    Ok(())
}
