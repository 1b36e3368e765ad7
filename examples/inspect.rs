//! List a checkpoint's variables (path, dtype, shape, min/max/mean, finite or not) and its fingerprint; with
//! two files, print what differs. Reads purestate checkpoints and plain safetensors files written by Python.
//!
//! `cargo run --example inspect -- FILE [FILE2]`

use purestate::{checkpoint, DType, StateStore};

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() || files.len() > 2 {
        return Err("usage: inspect FILE [FILE2]".into());
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
