//! Checkpoints: a [`StateStore`] as one [safetensors] file, written atomically, read back with its specs and
//! checked against its fingerprint; [`restore`] by path into an existing store; a [`CheckpointManager`] that
//! keeps the last N steps plus every k-th. This is the only module that touches the file system.
//!
//! # The file
//!
//! A standard safetensors file: tensor names are variable paths (`dense/kernel`), every dtype maps to its
//! safetensors code (`BOOL`, `I8`..`I64`, `U8`..`U64`, `F16`, `BF16`, `F32`, `F64`), values are little-endian in
//! row-major order whatever the tensor's memory layout, and tensors are ordered as safetensors orders them
//! (by dtype alignment, then name). The `__metadata__` map holds one entry, `purestate`, whose value is a JSON
//! document (see the `metadata` module's docs for its schema): format version, floatx, seed, base version,
//! [`Fingerprint`] and every variable's spec in creation order. Python reads the file
//! with `safetensors.numpy.load_file` (after `import ml_dtypes` when it holds bfloat16).
//!
//! # Guarantees
//!
//! - [`save`] writes a temporary file in the target's directory, fsyncs it, renames it over the target and
//!   fsyncs the directory: a crash at any moment leaves the old file or the new one, never a mix, and at most
//!   one temporary file (`.<name>.tmp-<pid>-<n>`), which the next save into that directory removes.
//! - [`load`] gives a store with the same specs, values, floatx, seed, base version and fingerprint, and refuses
//!   a file whose values do not hash to the fingerprint it records ([`Error::Corrupt`]). The trainer's id
//!   ([`crate::TrainerId`]) is not saved: a loaded store commits to no trainer; start one with
//!   [`crate::Trainer::new`], or [`restore`] it into a clone of a trainer's head.
//! - A truncated, corrupted or foreign file is an [`Error`] naming the file, never a panic.
//! - A safetensors file without our metadata (as `safetensors.numpy.save_file` writes) loads with default specs
//!   in name order: trainable, autocast, aggregation `none`, synchronization `auto`, the tensor's own dtype.
//!   It has no fingerprint, so a flipped byte in its data cannot be detected.
//! - Constraints and regularizers are recorded by name only (they are trait objects) and are not restored:
//!   set them again with [`StateStore::set_constraint`] and [`StateStore::set_regularizer`].
//!
//! # Examples
//! ```no_run
//! use purestate::{checkpoint, init, StateStore, VariableSpec};
//!
//! let mut state = StateStore::new();
//! state.create(VariableSpec::new(init::Ones).shape([2, 3]).name("kernel").name_scope("dense"))?;
//! checkpoint::save(&state, "model.safetensors")?;
//!
//! let loaded = checkpoint::load("model.safetensors")?;
//! assert_eq!(loaded.fingerprint(), state.fingerprint());
//!
//! let report = checkpoint::restore(&mut state, "model.safetensors")?;
//! assert_eq!(report.applied, ["dense/kernel"]);
//! # Ok::<(), purestate::Error>(())
//! ```
//!
//! [safetensors]: https://github.com/huggingface/safetensors

pub(crate) mod atomic;
mod manager;
pub(crate) mod metadata;

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};

pub use manager::CheckpointManager;

use self::metadata::{corrupt, split_path, Header, METADATA_KEY};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::random::Key;
use crate::store::{Fingerprint, StateStore};
use crate::tensor::{with_dtype, Element, Shape, Tensor};
use crate::variable::VariableSpec;

/// Which variables [`restore`] filled, and which it could not match (Keras's `load_weights` and burn's load
/// report).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Paths of the store's variables that took the file's value, in creation order.
    pub applied: Vec<String>,
    /// Paths of the store's variables the file has no tensor for (left unchanged), in creation order.
    pub missing: Vec<String>,
    /// Names of the file's tensors the store has no variable for (ignored), in the file's order.
    pub unexpected: Vec<String>,
}

impl LoadReport {
    /// True when every variable was filled and every tensor used: nothing missing, nothing unexpected.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty()
    }
}

/// Writes `state` to `path` as one safetensors file, atomically.
///
/// O(total bytes), twice: once to fingerprint the state, once to write it. Values are written as they are
/// stored (no copy) when a tensor is contiguous; a non-contiguous tensor is copied to row-major order first.
/// The file replaces `path` only once it is complete and on disk (temporary file, fsync, rename, fsync of the
/// directory); stray temporary files that killed processes left in the directory are removed first.
///
/// # Errors
/// [`Error::Io`] naming `path` when a write, fsync or rename fails; then `path` keeps its old contents and the
/// temporary file is removed. [`Error::Io`] naming the directory when only its final fsync fails: the new file
/// is in place but may not survive a power loss. [`Error::InvalidArgument`] when the header would exceed
/// safetensors' 100 MB limit (millions of variables).
///
/// # Examples
/// ```no_run
/// use purestate::{checkpoint, StateStore, Tensor, VariableSpec};
/// let mut state = StateStore::new();
/// state.create(VariableSpec::new(Tensor::from([1.0f32, 2.0])).name("w"))?;
/// checkpoint::save(&state, "w.safetensors")?;
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn save(state: &StateStore, path: impl AsRef<Path>) -> Result<()> {
    let encoded = Encoded::of(state)?;
    atomic::write_atomic(path.as_ref(), |w| encoded.write_to(w))
}

/// Reads the store saved at `path`.
///
/// O(file size). The store has the saved specs (path, name, dtype, shape, trainable, autocast, aggregation,
/// synchronization, overwrite_with_gradient), values, floatx, seed and base version, in the saved creation
/// order, and so the saved [`fingerprint`](StateStore::fingerprint) (an order-free set hash of the values). It
/// is a new store lineage: handles of the saved store do not work on it; find variables with
/// [`StateStore::find`].
///
/// A safetensors file without purestate's metadata (written by Python's `safetensors.numpy.save_file`, say)
/// loads with default specs, in name order, each tensor name split at its last `/` into name scope and name.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Corrupt`] naming the file when it is not safetensors,
/// is truncated, its header and tensors disagree, a tensor name is not a valid variable path, or its values do
/// not match its recorded fingerprint; [`Error::UnsupportedTensorDType`] for a dtype purestate lacks (float8,
/// complex).
///
/// # Examples
/// ```no_run
/// use purestate::checkpoint;
/// let state = checkpoint::load("model.safetensors")?;
/// let kernel = state.find("dense/kernel")?;
/// println!("{}", state.repr(&kernel)?);
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn load(path: impl AsRef<Path>) -> Result<StateStore> {
    let file = path.as_ref();
    let bytes = fs::read(file).map_err(|source| Error::Io { file: file.to_path_buf(), source })?;
    let contents = Contents::decode(&bytes, file)?;
    drop(bytes);
    contents.into_store(file)
}

/// Fills the variables of `state` from the file at `path`, matched by path, and reports what matched.
///
/// O(file size). Only values change (as [`StateStore::assign`] would change them); specs and settable
/// attributes stay the store's. Every match is checked before anything is assigned, so on error `state` is
/// unchanged. The file is read and checked as [`load`] does.
///
/// # Errors
/// As [`load`]; [`Error::ShapeMismatch`] or [`Error::DTypeMismatch`] naming the first variable (in creation
/// order) whose tensor in the file has another shape or dtype.
///
/// # Examples
/// ```no_run
/// use purestate::{checkpoint, init, StateStore, VariableSpec};
/// let mut state = StateStore::new();
/// state.create(VariableSpec::new(init::Zeros).shape([64, 10]).name("kernel").name_scope("dense"))?;
/// let report = checkpoint::restore(&mut state, "pretrained.safetensors")?;
/// println!("missing: {:?}, unexpected: {:?}", report.missing, report.unexpected);
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn restore(state: &mut StateStore, path: impl AsRef<Path>) -> Result<LoadReport> {
    let loaded = load(path)?;
    let mut report = LoadReport::default();
    let mut updates = Vec::new();
    for var in state.variables() {
        let Ok(source) = loaded.find(var.path()) else {
            report.missing.push(var.path().to_string());
            continue;
        };
        let value = loaded.get(&source)?;
        if value.dims() != var.shape().dims() {
            return Err(Error::ShapeMismatch {
                path: var.path().to_string(),
                expected: var.shape().clone(),
                got: value.shape(),
            });
        }
        if value.dtype() != var.dtype() {
            return Err(Error::DTypeMismatch {
                path: var.path().to_string(),
                expected: var.dtype(),
                got: value.dtype(),
            });
        }
        report.applied.push(var.path().to_string());
        updates.push((var, value));
    }
    for source in loaded.variables() {
        if state.find(source.path()).is_err() {
            report.unexpected.push(source.path().to_string());
        }
    }
    let mut next = state.clone();
    for (var, value) in updates {
        next.assign(&var, value)?;
    }
    *state = next;
    Ok(report)
}

/// The safetensors dtype code of each dtype.
const DTYPES: [(DType, Dtype); 13] = [
    (DType::Bool, Dtype::BOOL),
    (DType::Int8, Dtype::I8),
    (DType::Int16, Dtype::I16),
    (DType::Int32, Dtype::I32),
    (DType::Int64, Dtype::I64),
    (DType::Uint8, Dtype::U8),
    (DType::Uint16, Dtype::U16),
    (DType::Uint32, Dtype::U32),
    (DType::Uint64, Dtype::U64),
    (DType::Float16, Dtype::F16),
    (DType::Bfloat16, Dtype::BF16),
    (DType::Float32, Dtype::F32),
    (DType::Float64, Dtype::F64),
];

fn to_safetensors(dtype: DType) -> Dtype {
    DTYPES.iter().find(|(d, _)| *d == dtype).map(|&(_, s)| s).expect("every dtype is in the table")
}

fn from_safetensors(dtype: Dtype) -> Option<DType> {
    DTYPES.iter().find(|(_, s)| *s == dtype).map(|&(d, _)| d)
}

/// A store ready to write: the length-prefixed, padded safetensors header and the tensors in file order.
struct Encoded {
    header: Vec<u8>,
    tensors: Vec<Tensor>,
}

impl Encoded {
    fn of(state: &StateStore) -> Result<Encoded> {
        let too_large = |reason: String| Error::InvalidArgument { op: "checkpoint::save", arg: "state", reason };
        let json = Header::of(state).to_json();
        let mut entries: Vec<(&str, &Tensor)> = state.iter().map(|(var, value)| (var.path(), value)).collect();
        // safetensors' own order (`serialize`): larger alignment first, then name.
        entries.sort_by(|(ln, l), (rn, r)| {
            to_safetensors(r.dtype()).cmp(&to_safetensors(l.dtype())).then_with(|| ln.cmp(rn))
        });
        let mut offset = 0;
        let mut infos = Vec::with_capacity(entries.len());
        for (path, value) in &entries {
            let end = offset + value.nbytes();
            let info = TensorInfo {
                dtype: to_safetensors(value.dtype()),
                shape: value.dims().to_vec(),
                data_offsets: (offset, end),
            };
            infos.push((path.to_string(), info));
            offset = end;
        }
        let metadata = Metadata::new(Some(HashMap::from([(METADATA_KEY.to_string(), json)])), infos)
            .map_err(|e| too_large(e.to_string()))?;
        let mut text = serde_json::to_vec(&metadata).map_err(|e| too_large(e.to_string()))?;
        text.resize(text.len().next_multiple_of(8), b' ');
        if text.len() > MAX_HEADER_BYTES {
            return Err(too_large(format!("the safetensors header would take {} bytes, over its limit", text.len())));
        }
        let mut header = (text.len() as u64).to_le_bytes().to_vec();
        header.extend_from_slice(&text);
        Ok(Encoded { header, tensors: entries.into_iter().map(|(_, t)| t.clone()).collect() })
    }

    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(&self.header)?;
        for tensor in &self.tensors {
            let mut result = Ok(());
            tensor.for_each_le_chunk(|bytes| {
                if result.is_ok() {
                    result = w.write_all(bytes);
                }
            });
            result?;
        }
        Ok(())
    }
}

/// safetensors refuses headers larger than this (`MAX_HEADER_SIZE` in safetensors 0.8).
const MAX_HEADER_BYTES: usize = 100_000_000;

/// A checked file's contents: our header if it has one, and its tensors in file order.
struct Contents {
    header: Option<Header>,
    tensors: Vec<(String, Tensor)>,
}

impl Contents {
    fn decode(bytes: &[u8], file: &Path) -> Result<Contents> {
        let (n, metadata) = SafeTensors::read_metadata(bytes)
            .map_err(|e| corrupt(file, format!("not a valid safetensors file ({} bytes): {e}", bytes.len())))?;
        let data = bytes.get(8 + n..).ok_or_else(|| corrupt(file, "the data ends before the header does"))?;
        let header = match metadata.metadata().as_ref().and_then(|m| m.get(METADATA_KEY)) {
            Some(json) => Some(Header::parse(json, file)?),
            None => None,
        };
        let mut tensors = Vec::new();
        for name in metadata.offset_keys() {
            let info = metadata.info(&name).ok_or_else(|| corrupt(file, format!("`{name}`: no tensor info")))?;
            let Some(dtype) = from_safetensors(info.dtype) else {
                return Err(Error::UnsupportedTensorDType {
                    file: file.to_path_buf(),
                    path: name,
                    dtype: info.dtype.to_string(),
                });
            };
            let (start, end) = info.data_offsets;
            let raw = data.get(start..end).ok_or_else(|| corrupt(file, format!("`{name}`: data out of bounds")))?;
            let value =
                tensor_from_le_bytes(dtype, &info.shape, raw).map_err(|r| corrupt(file, format!("`{name}`: {r}")))?;
            tensors.push((name, value));
        }
        Ok(Contents { header, tensors })
    }

    fn into_store(self, file: &Path) -> Result<StateStore> {
        let invalid_path = |path: &str, e: Error| corrupt(file, format!("tensor `{path}` cannot be a variable: {e}"));
        let Some(header) = self.header else {
            let mut tensors = self.tensors;
            tensors.sort_by(|(a, _), (b, _)| a.cmp(b));
            let mut state = StateStore::new();
            for (path, value) in tensors {
                let (scope, name) = split_path(&path);
                let mut spec = VariableSpec::new(value).name(name);
                if let Some(scope) = scope {
                    spec = spec.name_scope(scope);
                }
                state.create(spec).map_err(|e| invalid_path(&path, e))?;
            }
            return Ok(state);
        };
        let expected: Fingerprint = header
            .fingerprint
            .parse()
            .map_err(|_| corrupt(file, format!("fingerprint `{}` is not 32 hex digits", header.fingerprint)))?;
        let mut state = StateStore::new().with_floatx(header.floatx(file)?)?.with_seed(Key::from_words(header.seed));
        state.set_base(header.base_version);
        let mut tensors: HashMap<String, Tensor> = self.tensors.into_iter().collect();
        for record in &header.variables {
            let value = tensors.remove(&record.path).ok_or_else(|| {
                corrupt(file, format!("`{}` is in the header but has no tensor (or is listed twice)", record.path))
            })?;
            state.create(record.spec(value, file)?).map_err(|e| invalid_path(&record.path, e))?;
        }
        if let Some(extra) = tensors.keys().min() {
            return Err(corrupt(file, format!("tensor `{extra}` is not in the header")));
        }
        let got = if header.format_version < 2 { state.fingerprint_v1() } else { state.fingerprint() };
        if got != expected {
            return Err(corrupt(
                file,
                format!("fingerprint mismatch: the header records {expected}, the values hash to {got}"),
            ));
        }
        Ok(state)
    }
}

/// A tensor of `dtype` and `shape` from little-endian bytes in row-major order (`bytes.len()` is checked by
/// safetensors against the shape). A bool must be stored as 0 or 1.
pub(crate) fn tensor_from_le_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> std::result::Result<Tensor, String> {
    if dtype == DType::Bool && bytes.iter().any(|&b| b > 1) {
        return Err("a bool byte is neither 0 nor 1".to_string());
    }
    let size = dtype.itemsize();
    if !bytes.len().is_multiple_of(size) {
        return Err(format!("{} bytes is not a whole number of {dtype} elements", bytes.len()));
    }
    with_dtype!(dtype, T => {
        let data: Vec<T> = bytes.chunks_exact(size).map(T::from_le_slice).collect();
        Tensor::from_shape_vec(Shape::from(shape), data).map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init;
    use proptest::prelude::*;

    /// A writer that fails once `left` bytes have gone through, as a full disk would.
    struct FailAfter<'a> {
        inner: &'a mut dyn Write,
        left: usize,
    }

    impl Write for FailAfter<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::other("injected failure: no space left"));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            self.inner.write(&buf[..n])
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    fn sample_state() -> StateStore {
        let mut state = StateStore::new();
        state
            .create(VariableSpec::new(init::Constant::new(1.5)).shape([16, 8]).name("kernel").name_scope("dense"))
            .unwrap();
        state.create(VariableSpec::new(Tensor::from([true, false, true])).name("mask")).unwrap();
        state.create(VariableSpec::new(Tensor::from(7i64)).name("step").trainable(false)).unwrap();
        state
    }

    fn encode(state: &StateStore) -> Vec<u8> {
        let mut bytes = Vec::new();
        Encoded::of(state).unwrap().write_to(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn write_failure_half_way_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let old = sample_state();
        save(&old, &path).unwrap();
        let before = fs::read(&path).unwrap();

        let mut new = old.clone();
        let kernel = new.find("dense/kernel").unwrap();
        new.assign(&kernel, Tensor::zeros([16, 8], DType::Float32)).unwrap();
        let encoded = Encoded::of(&new).unwrap();
        let half = encode(&new).len() / 2;
        // The same write as `save`, through a writer that fails half-way.
        let err =
            atomic::write_atomic(&path, |w| encoded.write_to(&mut FailAfter { inner: w, left: half })).unwrap_err();

        assert!(matches!(err, Error::Io { ref file, .. } if file == &path), "{err}");
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(load(&path).unwrap().fingerprint(), old.fingerprint());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "the temporary file is removed");
    }

    #[test]
    fn encoding_is_deterministic_and_readable_by_safetensors() {
        let state = sample_state();
        let bytes = encode(&state);
        assert_eq!(bytes, encode(&state));
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("dense/kernel").unwrap().dtype(), Dtype::F32);
        assert_eq!(st.tensor("mask").unwrap().data(), &[1, 0, 1]);
        assert_eq!(st.tensor("step").unwrap().data(), &7i64.to_le_bytes());
    }

    #[test]
    fn every_data_byte_flip_is_caught() {
        let state = sample_state();
        let bytes = encode(&state);
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        for i in 8 + n..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let result = Contents::decode(&bad, Path::new("f")).and_then(|c| c.into_store(Path::new("f")));
            assert!(matches!(result, Err(Error::Corrupt { .. })), "byte {i} flipped went unnoticed");
        }
    }

    #[test]
    fn load_keeps_seed_floatx_and_base() {
        let mut state = StateStore::new().with_seed(Key::new(7)).with_floatx(DType::Bfloat16).unwrap();
        state.set_base(Some(3));
        let file = Path::new("f");
        let loaded = Contents::decode(&encode(&state), file).and_then(|c| c.into_store(file)).unwrap();
        assert_eq!(loaded.seed(), Key::new(7));
        assert_eq!(loaded.floatx(), DType::Bfloat16);
        assert_eq!(loaded.base(), Some(3));
    }

    /// A safetensors file made by hand from its header JSON and data bytes.
    fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut text = header.as_bytes().to_vec();
        text.resize(text.len().next_multiple_of(8), b' ');
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&text);
        bytes.extend_from_slice(data);
        bytes
    }

    fn load_bytes(bytes: &[u8]) -> Result<StateStore> {
        let file = Path::new("hand.safetensors");
        Contents::decode(bytes, file).and_then(|c| c.into_store(file))
    }

    #[test]
    fn unsupported_dtype_names_the_tensor() {
        let bytes = raw_file(r#"{"x":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"#, &[0, 0]);
        let err = load_bytes(&bytes).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedTensorDType { ref path, ref dtype, .. } if path == "x" && dtype == "F8_E4M3")
        );
    }

    #[test]
    fn hostile_headers_are_errors_not_panics() {
        let cases = [
            // zero elements, but the other dimensions overflow any allocation
            r#"{"x":{"dtype":"F32","shape":[0,1099511627776,1099511627776],"data_offsets":[0,0]}}"#,
            // a tensor name that cannot be a variable path
            r#"{"a//b":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}"#,
            // our key with a header that is not ours
            r#"{"__metadata__":{"purestate":"{\"format\":1}"},"x":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}"#,
        ];
        for header in cases {
            let data = if header.contains("[0,1]") { vec![1] } else { Vec::new() };
            let err = load_bytes(&raw_file(header, &data)).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{header}: {err}");
        }
    }

    #[test]
    fn foreign_metadata_is_ignored() {
        let bytes = raw_file(
            r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"I16","shape":[1],"data_offsets":[0,2]}}"#,
            &[5, 0],
        );
        let state = load_bytes(&bytes).unwrap();
        assert_eq!(state.get(&state.find("w").unwrap()).unwrap().to_vec::<i16>().unwrap(), [5]);
    }

    #[test]
    fn bool_bytes_other_than_0_or_1_are_corrupt() {
        let err = tensor_from_le_bytes(DType::Bool, &[2], &[1, 3]).unwrap_err();
        assert!(err.contains("bool"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn damaged_files_never_panic(
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = encode(&sample_state());
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            if truncate {
                let len = cut.index(bytes.len());
                bytes.truncate(len);
            }
            let file = Path::new("damaged.safetensors");
            // Any outcome but a panic; a successful load must hold a consistent store.
            if let Ok(state) = Contents::decode(&bytes, file).and_then(|c| c.into_store(file)) {
                prop_assert!(state.len() <= 3);
            }
        }
    }
}
