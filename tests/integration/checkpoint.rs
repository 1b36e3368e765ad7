//! Checkpoints through the public API: round trips of every dtype and spec, the fingerprint check, restore
//! reports, damaged and foreign files, the manager's retention, atomic replacement, and interop with Python's
//! safetensors in both directions (fixtures made by `tools/make_fixture.py`, checked here without Python).

use std::fs;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use ndarray::ArcArray;
use purestate::checkpoint::{self, CheckpointManager};
use purestate::random::Key;
use purestate::{init, Aggregation, DType, Error, StateStore, Synchronization, Tensor, Trainer, VariableSpec};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A (2, 3) float32 tensor stored transposed, so its memory order is not its row-major order.
fn transposed_f32() -> Tensor {
    let a = ArcArray::from_shape_vec((3, 2), vec![1.5f32, 2.5, 3.5, 4.5, 5.5, -6.5]).unwrap();
    Tensor::from_ndarray(a.reversed_axes())
}

/// The store behind `tests/data/rust_fixture.safetensors`: every dtype, a 0-d, a 3-d and a non-contiguous
/// tensor, options off their defaults, floatx float64, seed 42, base version 1. `tools/make_fixture.py` states
/// the same values and checks them in Python.
fn rust_fixture_store() -> StateStore {
    let mut state = StateStore::new().with_floatx(DType::Float64).unwrap().with_seed(Key::new(42));
    let specs = [
        VariableSpec::new(transposed_f32()).name("kernel").name_scope("dense"),
        VariableSpec::new(Tensor::from([0.5f64, -1.25, 65504.0]))
            .dtype("float16")
            .name("bias")
            .name_scope("dense")
            .aggregation("mean"),
        VariableSpec::new(Tensor::from([0.1f64, -1e-300, 1e300])).name("scale").name_scope("dense"),
        VariableSpec::new(
            Tensor::from_shape_vec([2, 2], vec![1.0f64, -2.0, 0.15625, 2f64.powi(100)]).unwrap().cast(DType::Bfloat16),
        )
        .name("table")
        .name_scope("embed"),
        VariableSpec::new(Tensor::from([true, false, false, true]))
            .name("mask")
            .name_scope("flags")
            .autocast(false)
            .synchronization("on_read"),
        VariableSpec::new(Tensor::from(-9_007_199_254_740_993i64)).name("step").trainable(false),
        VariableSpec::new(Tensor::from([-128i8, -1, 0, 127])).name("i8").name_scope("ints"),
        VariableSpec::new(Tensor::from([-32768i16, 2, 32767])).name("i16").name_scope("ints"),
        VariableSpec::new(Tensor::from([[i32::MIN, 0], [1, i32::MAX]])).name("i32").name_scope("ints"),
        VariableSpec::new(Tensor::from_shape_vec([2, 2, 2], vec![0u8, 1, 2, 3, 252, 253, 254, 255]).unwrap())
            .name("u8")
            .name_scope("uints"),
        VariableSpec::new(Tensor::from([0u16, u16::MAX])).name("u16").name_scope("uints"),
        VariableSpec::new(Tensor::from([0u32, u32::MAX])).name("u32").name_scope("uints"),
        VariableSpec::new(Tensor::from([0u64, u64::MAX])).name("u64").name_scope("uints").overwrite_with_gradient(true),
    ];
    for spec in specs {
        state.create(spec).unwrap();
    }
    let mut trainer: Trainer = Trainer::new(state);
    let next = trainer.state().clone();
    trainer.commit(next).unwrap();
    trainer.state().clone()
}

fn save_to_temp(state: &StateStore) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.safetensors");
    checkpoint::save(state, &path).unwrap();
    (dir, path)
}

fn assert_same_store(a: &StateStore, b: &StateStore) {
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.floatx(), b.floatx());
    assert_eq!(a.base(), b.base());
    let (va, vb) = (a.variables(), b.variables());
    assert_eq!(va.len(), vb.len());
    for (x, y) in va.iter().zip(&vb) {
        assert_eq!(x.info(), y.info(), "spec of {}", x.path());
        assert!(a.get(x).unwrap().bit_eq(&b.get(y).unwrap()), "value of {}", x.path());
        assert_eq!(a.trainable(x).unwrap(), b.trainable(y).unwrap(), "trainable of {}", x.path());
        assert_eq!(a.overwrite_with_gradient(x).unwrap(), b.overwrite_with_gradient(y).unwrap());
    }
}

/// Compares a tensor with its description in the fixtures' JSON: dtype, shape, and the exact values (floats as
/// their bit patterns, as Python recorded them).
fn assert_matches_json(name: &str, t: &Tensor, expected: &Value) {
    assert_eq!(t.dtype().name(), expected["dtype"].as_str().unwrap(), "{name}");
    let shape: Vec<usize> =
        expected["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    assert_eq!(t.dims(), shape.as_slice(), "{name}");
    let values = expected["values"].as_array().unwrap();
    let dtype = t.dtype();
    if dtype.is_bool() {
        let got = t.to_vec::<bool>().unwrap();
        let want: Vec<bool> = values.iter().map(|v| v.as_bool().unwrap()).collect();
        assert_eq!(got, want, "{name}");
    } else if dtype.is_signed_integer() {
        let got = t.cast(DType::Int64).to_vec::<i64>().unwrap();
        let want: Vec<i64> = values.iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(got, want, "{name}");
    } else if dtype.is_unsigned_integer() {
        let got = t.cast(DType::Uint64).to_vec::<u64>().unwrap();
        let want: Vec<u64> = values.iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(got, want, "{name}");
    } else {
        let want: Vec<u64> = expected["bits"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        let got: Vec<u64> = match dtype {
            DType::Float16 => t.to_vec::<f16>().unwrap().iter().map(|x| u64::from(x.to_bits())).collect(),
            DType::Bfloat16 => t.to_vec::<bf16>().unwrap().iter().map(|x| u64::from(x.to_bits())).collect(),
            DType::Float32 => t.to_vec::<f32>().unwrap().iter().map(|x| u64::from(x.to_bits())).collect(),
            _ => t.to_vec::<f64>().unwrap().iter().map(|x| x.to_bits()).collect(),
        };
        assert_eq!(got, want, "{name}");
    }
}

fn fixtures_json() -> Value {
    let text = fs::read_to_string(data_dir().join("fixtures.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_dtype_and_spec_round_trips() {
    let state = rust_fixture_store();
    let (_dir, path) = save_to_temp(&state);
    let loaded = checkpoint::load(&path).unwrap();
    assert_same_store(&state, &loaded);
    let dtypes: Vec<DType> = loaded.variables().iter().map(|v| v.dtype()).collect();
    for dtype in DType::ALL {
        assert!(dtypes.contains(&dtype), "{dtype} is not covered");
    }
    let paths: Vec<String> = loaded.variables().iter().map(|v| v.path().to_string()).collect();
    assert_eq!(&paths[..3], ["dense/kernel", "dense/bias", "dense/scale"], "creation order, not name order");
    let mask = loaded.find("flags/mask").unwrap();
    assert!(!mask.autocast());
    assert_eq!(mask.synchronization(), Synchronization::OnRead);
    assert_eq!(loaded.find("dense/bias").unwrap().aggregation(), Aggregation::Mean);
    assert!(!loaded.trainable(&loaded.find("step").unwrap()).unwrap());
    assert_eq!(loaded.floatx(), DType::Float64);
    assert_eq!(loaded.base(), Some(1));
}

#[test]
fn non_contiguous_values_are_written_in_row_major_order() {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(transposed_f32()).name("w")).unwrap();
    assert!(state.get(&w).unwrap().as_slice::<f32>().is_none(), "the test needs a non-contiguous tensor");
    let (_dir, path) = save_to_temp(&state);
    let loaded = checkpoint::load(&path).unwrap();
    let value = loaded.get(&loaded.find("w").unwrap()).unwrap();
    assert_eq!(value.to_vec::<f32>().unwrap(), [1.5, 3.5, 5.5, 2.5, 4.5, -6.5]);
    assert_eq!(loaded.fingerprint(), state.fingerprint());
}

#[test]
fn empty_store_round_trips() {
    let (_dir, path) = save_to_temp(&StateStore::new());
    let loaded = checkpoint::load(&path).unwrap();
    assert!(loaded.is_empty());
    assert_eq!(loaded.fingerprint(), StateStore::new().fingerprint());
}

#[test]
fn constraints_and_regularizers_are_not_restored() {
    #[derive(Debug)]
    struct Clip;
    impl purestate::constraint::Constraint for Clip {
        fn apply(&self, value: &Tensor) -> purestate::Result<Tensor> {
            Ok(value.clone())
        }
        fn name(&self) -> &'static str {
            "Clip"
        }
    }
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Zeros).shape([2]).name("w").constraint(Clip)).unwrap();
    assert!(state.constraint(&w).unwrap().is_some());
    let (_dir, path) = save_to_temp(&state);
    let loaded = checkpoint::load(&path).unwrap();
    assert!(loaded.constraint(&loaded.find("w").unwrap()).unwrap().is_none());
    let bytes = fs::read(&path).unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains(r#"\"constraint\":\"Clip\""#), "the name is recorded");
}

#[test]
fn flipped_data_byte_is_a_fingerprint_mismatch() {
    let state = rust_fixture_store();
    let (_dir, path) = save_to_temp(&state);
    let mut bytes = fs::read(&path).unwrap();
    // The first data byte: the low byte of `uints/u64`'s first element (safetensors puts 8-byte dtypes first).
    let data_start = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[data_start] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let err = checkpoint::load(&path).unwrap_err();
    assert!(matches!(err, Error::Corrupt { ref file, .. } if file == &path), "{err}");
    let message = err.to_string();
    assert!(message.starts_with(&format!("{}: corrupt checkpoint: fingerprint mismatch", path.display())), "{message}");
}

#[test]
fn truncated_file_is_corrupt_at_every_length() {
    let state = rust_fixture_store();
    let (_dir, path) = save_to_temp(&state);
    let bytes = fs::read(&path).unwrap();
    for len in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
        fs::write(&path, &bytes[..len]).unwrap();
        let err = checkpoint::load(&path).unwrap_err();
        assert!(matches!(err, Error::Corrupt { ref file, .. } if file == &path), "length {len}: {err}");
    }
}

#[test]
fn foreign_files_are_corrupt_and_missing_files_are_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8]); 4] = [
        ("empty", b""),
        ("text", b"hello, this is not a checkpoint at all\n"),
        ("json", b"{\"weights\": [1, 2, 3]}"),
        ("huge_header", &u64::MAX.to_le_bytes()),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        let err = checkpoint::load(&path).unwrap_err();
        assert!(matches!(err, Error::Corrupt { ref file, .. } if file == &path), "{name}: {err}");
    }
    let missing = dir.path().join("missing.safetensors");
    let err = checkpoint::load(&missing).unwrap_err();
    assert!(
        matches!(err, Error::Io { ref file, ref source } if file == &missing && source.kind() == std::io::ErrorKind::NotFound)
    );
}

#[test]
fn restore_fills_by_path_and_reports_missing_and_unexpected() {
    let mut source = StateStore::new();
    source.create(VariableSpec::new(Tensor::from([1.0f32, 2.0])).name("kernel").name_scope("dense")).unwrap();
    source.create(VariableSpec::new(Tensor::from([3.0f32])).name("extra")).unwrap();
    let (_dir, path) = save_to_temp(&source);

    let mut state = StateStore::new();
    let kernel = state.create(VariableSpec::new(init::Zeros).shape([2]).name("kernel").name_scope("dense")).unwrap();
    let head = state.create(VariableSpec::new(init::Ones).shape([1]).name("head").trainable(false)).unwrap();
    let report = checkpoint::restore(&mut state, &path).unwrap();

    assert_eq!(report.applied, ["dense/kernel"]);
    assert_eq!(report.missing, ["head"]);
    assert_eq!(report.unexpected, ["extra"]);
    assert!(!report.is_complete());
    assert_eq!(state.get(&kernel).unwrap().to_vec::<f32>().unwrap(), [1.0, 2.0]);
    assert_eq!(state.get(&head).unwrap().to_vec::<f32>().unwrap(), [1.0], "a missing variable is unchanged");
    assert!(!state.trainable(&head).unwrap(), "restore changes values only");
}

#[test]
fn restore_with_a_wrong_shape_or_dtype_changes_nothing() {
    let mut source = StateStore::new();
    source.create(VariableSpec::new(Tensor::from([1.0f32, 2.0])).name("a")).unwrap();
    source.create(VariableSpec::new(Tensor::from([1.0f32, 2.0, 3.0])).name("b")).unwrap();
    let (_dir, path) = save_to_temp(&source);

    let mut state = StateStore::new();
    let a = state.create(VariableSpec::new(init::Zeros).shape([2]).name("a")).unwrap();
    state.create(VariableSpec::new(init::Zeros).shape([2]).name("b")).unwrap();
    let before = state.fingerprint();
    let err = checkpoint::restore(&mut state, &path).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { ref path, .. } if path == "b"), "{err}");
    assert_eq!(err.to_string(), "`b`: shape mismatch, expected (2,), got (3,)");
    assert_eq!(state.fingerprint(), before, "`a` was valid but must not be assigned either");
    assert_eq!(state.get(&a).unwrap().to_vec::<f32>().unwrap(), [0.0, 0.0]);

    let mut state = StateStore::new();
    state.create(VariableSpec::new(init::Zeros).shape([2]).name("a").dtype("float64")).unwrap();
    let err = checkpoint::restore(&mut state, &path).unwrap_err();
    assert!(
        matches!(err, Error::DTypeMismatch { ref path, expected: DType::Float64, got: DType::Float32 } if path == "a"),
        "{err}"
    );
}

#[test]
fn manager_keeps_the_last_steps_and_every_kth() {
    let dir = tempfile::tempdir().unwrap();
    let manager = CheckpointManager::new(dir.path().join("ckpt"), 3, 10).unwrap();
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Zeros).shape([2]).name("w")).unwrap();
    assert_eq!(manager.latest().unwrap(), None);
    for step in 1..=25u64 {
        state.assign(&w, Tensor::from([step as f32, 0.0])).unwrap();
        manager.save(step, &state).unwrap();
    }
    assert_eq!(manager.all_steps().unwrap(), [10, 20, 23, 24, 25]);
    assert_eq!(manager.latest().unwrap(), Some(25));
    assert!(manager.path(25).ends_with("ckpt-00000025.safetensors"));
    let restored = manager.restore(20).unwrap();
    assert_eq!(restored.get(&restored.find("w").unwrap()).unwrap().to_vec::<f32>().unwrap(), [20.0, 0.0]);
    let err = manager.restore(21).unwrap_err();
    assert!(matches!(err, Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound), "{err}");
}

#[test]
fn manager_without_limits_keeps_everything_and_refuses_zero() {
    let dir = tempfile::tempdir().unwrap();
    let manager = CheckpointManager::new(dir.path(), None, None).unwrap();
    for step in [1, 2, 3] {
        manager.save(step, &StateStore::new()).unwrap();
    }
    fs::write(dir.path().join("notes.txt"), b"not a checkpoint").unwrap();
    assert_eq!(manager.all_steps().unwrap(), [1, 2, 3]);
    assert!(matches!(
        CheckpointManager::new(dir.path(), 0, None),
        Err(Error::InvalidArgument { arg: "keep_last", .. })
    ));
    assert!(matches!(CheckpointManager::new(dir.path(), 1, 0), Err(Error::InvalidArgument { arg: "keep_every", .. })));
}

/// A process killed during a save leaves its temporary file (`.<name>.tmp-<pid>-<n>`) holding part of the new
/// checkpoint; the old file must still load, and the next save or manager into that directory removes it.
#[test]
fn save_killed_half_way_leaves_the_old_file_and_one_stray_that_the_next_save_removes() {
    let dir = tempfile::tempdir().unwrap();
    let manager = CheckpointManager::new(dir.path(), None, None).unwrap();
    let old = rust_fixture_store();
    manager.save(1, &old).unwrap();
    let new_bytes = {
        let (_d, p) = save_to_temp(&StateStore::new().with_seed(Key::new(9)));
        fs::read(p).unwrap()
    };
    // What the killed process left: the first half of its file under a temporary name of a dead pid.
    let stray = dir.path().join(".ckpt-00000001.safetensors.tmp-4000000000-0");
    fs::write(&stray, &new_bytes[..new_bytes.len() / 2]).unwrap();

    assert_same_store(&manager.restore(1).unwrap(), &old);
    assert!(stray.exists());
    assert!(manager.all_steps().unwrap() == [1], "a temporary file is not a step");
    CheckpointManager::new(dir.path(), None, None).unwrap();
    assert!(!stray.exists(), "the manager removes strays on start");

    fs::write(&stray, b"partial").unwrap();
    checkpoint::save(&old, dir.path().join("other.safetensors")).unwrap();
    assert!(!stray.exists(), "a save into the directory removes strays");
}

#[test]
fn python_fixture_loads_with_default_specs_in_name_order() {
    let json = fixtures_json();
    let fixture = &json["python_fixture"];
    let path = data_dir().join(fixture["file"].as_str().unwrap());
    assert_eq!(
        sha256_hex(&fs::read(&path).unwrap()),
        fixture["sha256"].as_str().unwrap(),
        "the fixture the JSON describes"
    );
    let state = checkpoint::load(&path).unwrap();

    let tensors = fixture["tensors"].as_object().unwrap();
    let mut names: Vec<String> = tensors.keys().cloned().collect();
    names.sort();
    let paths: Vec<String> = state.variables().iter().map(|v| v.path().to_string()).collect();
    assert_eq!(paths, names, "a file without our metadata loads in name order");
    for (name, expected) in tensors {
        let var = state.find(name).unwrap();
        assert_matches_json(name, &state.get(&var).unwrap(), expected);
        assert_eq!(var.name(), name.rsplit('/').next().unwrap());
        assert!(state.trainable(&var).unwrap() && var.autocast() && !state.overwrite_with_gradient(&var).unwrap());
        assert_eq!((var.aggregation(), var.synchronization()), (Aggregation::None, Synchronization::Auto));
    }
    assert_eq!(state.floatx(), DType::Float32);
    assert_eq!(state.base(), None);
    let dtypes: Vec<&str> = tensors.values().map(|t| t["dtype"].as_str().unwrap()).collect();
    for needed in ["bfloat16", "bool", "int64"] {
        assert!(dtypes.contains(&needed), "the Python fixture lacks {needed}");
    }
}

/// `tools/make_fixture.py` loaded the committed `rust_fixture.safetensors` with Python's safetensors and numpy,
/// checked its values, and recorded what it read and the file's sha256. Our writer must still produce exactly
/// that file. Regenerate with `PURESTATE_BLESS=1 cargo test rust_fixture`, then run the script.
#[test]
fn rust_fixture_is_the_file_python_verified() {
    let path = data_dir().join("rust_fixture.safetensors");
    let state = rust_fixture_store();
    if std::env::var_os("PURESTATE_BLESS").is_some() {
        checkpoint::save(&state, &path).unwrap();
    }
    let (_dir, fresh) = save_to_temp(&state);
    let committed = fs::read(&path).unwrap();
    assert!(fs::read(&fresh).unwrap() == committed, "save no longer writes the committed rust fixture byte for byte");

    let json = fixtures_json();
    let verified = &json["rust_fixture"];
    assert_eq!(verified["rust_file_loaded_in_python"], Value::Bool(true));
    assert_eq!(verified["sha256"].as_str().unwrap(), sha256_hex(&committed), "Python verified another file");
    assert_eq!(verified["fingerprint"].as_str().unwrap(), state.fingerprint().to_string());
    let order: Vec<String> = state.variables().iter().map(|v| v.path().to_string()).collect();
    let python_order: Vec<&str> =
        verified["creation_order"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(python_order, order);
    let tensors = verified["tensors"].as_object().unwrap();
    assert_eq!(tensors.len(), state.len());
    for (var, value) in state.iter() {
        assert_matches_json(var.path(), value, &tensors[var.path()]);
    }
    assert_same_store(&checkpoint::load(&path).unwrap(), &state);
}

/// A checkpoint of format 1 (written before variable digests were chunked, fingerprint tag
/// `purestate-fingerprint-v1`) still loads, verified against the fingerprint it records, and a flipped data byte
/// in it is still caught. `rust_fixture_v1.safetensors` is the format-1 `rust_fixture.safetensors` that
/// `tools/make_fixture.py` verified in Python before format 2.
#[test]
fn format_1_checkpoints_load_and_are_verified() {
    let path = data_dir().join("rust_fixture_v1.safetensors");
    let loaded = checkpoint::load(&path).unwrap();
    assert_same_store(&loaded, &rust_fixture_store());

    let dir = tempfile::tempdir().unwrap();
    let flipped = dir.path().join("flipped.safetensors");
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&flipped, &bytes).unwrap();
    assert!(matches!(checkpoint::load(&flipped), Err(Error::Corrupt { .. })));
}
