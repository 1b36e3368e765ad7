//! The one error type of the crate, [`Error`], and its [`Result`] alias.
//!
//! Every variant carries the values a user needs to see what went wrong: the variable path first, then the
//! shapes, dtypes or versions that clashed, as named fields. Messages are lowercase with no final period.

use std::path::PathBuf;

use crate::base::{DType, Fingerprint, Shape, TrainerId};

/// Every error purestate returns.
///
/// Variants name the variable path (`path`) or the operation (`op`) involved, then the values that clashed.
/// Match on variants, never on messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A dtype name that is not one of the Keras dtype names.
    #[error("unknown dtype `{name}`, expected one of {allowed}")]
    InvalidDType {
        /// The name that was given.
        name: String,
        /// The accepted names, comma separated.
        allowed: &'static str,
    },
    /// A string option (aggregation, synchronization, ...) outside its allowed values.
    #[error("invalid {option} `{got}`, expected one of {allowed}")]
    InvalidOption {
        /// The option's name, for example `aggregation`.
        option: &'static str,
        /// The value that was given.
        got: String,
        /// The accepted values, comma separated.
        allowed: &'static str,
    },
    /// A value whose shape is not the variable's (or not the one expected).
    #[error("`{path}`: shape mismatch, expected {expected}, got {got}")]
    ShapeMismatch {
        /// Variable path (or operation name).
        path: String,
        /// The shape required.
        expected: Shape,
        /// The shape given.
        got: Shape,
    },
    /// A tensor of one dtype where another was required.
    #[error("`{path}`: dtype mismatch, expected {expected}, got {got}")]
    DTypeMismatch {
        /// Variable path (or operation name).
        path: String,
        /// The dtype required.
        expected: DType,
        /// The dtype given.
        got: DType,
    },
    /// A handle created by a store of another lineage.
    #[error("`{path}`: variable belongs to another store lineage")]
    ForeignVariable {
        /// Path of the foreign variable.
        path: String,
    },
    /// A handle whose variable is not in this store: it was removed, or created on another branch.
    #[error("`{path}`: variable is not in this store (removed, or created on another branch)")]
    StaleVariable {
        /// Path of the missing variable.
        path: String,
    },
    /// No variable with this path exists in the store.
    #[error("`{path}`: no such variable")]
    UnknownPath {
        /// The path looked up.
        path: String,
    },
    /// Two variables with the same path in one store.
    #[error("`{path}`: a variable with this path already exists")]
    DuplicatePath {
        /// The clashing path.
        path: String,
    },
    /// A variable name or name scope that Keras would refuse.
    #[error("invalid variable name `{name}`: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A variable spec that cannot be built, for example a callable initializer without a shape.
    #[error("`{path}`: invalid variable spec: {reason}")]
    InvalidSpec {
        /// Path the variable would have had.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An operation that does not accept this dtype.
    #[error("{op}: unsupported dtype {dtype}")]
    UnsupportedDType {
        /// The operation.
        op: &'static str,
        /// The refused dtype.
        dtype: DType,
    },
    /// Two shapes that do not broadcast together.
    #[error("{op}: shapes {lhs} and {rhs} do not broadcast")]
    Broadcast {
        /// The operation.
        op: &'static str,
        /// Left operand's shape.
        lhs: Shape,
        /// Right operand's shape.
        rhs: Shape,
    },
    /// A shape that an operation cannot accept (bad reshape, matmul inner dimensions, axis out of range).
    #[error("{op}: invalid shape {shape}: {reason}")]
    InvalidShape {
        /// The operation.
        op: &'static str,
        /// The offending shape.
        shape: Shape,
        /// Why it was refused.
        reason: String,
    },
    /// An index or axis outside its range.
    #[error("{op}: index {index} is out of range for axis {axis} of size {size}")]
    IndexOutOfRange {
        /// The operation.
        op: &'static str,
        /// The index given.
        index: i64,
        /// The axis indexed.
        axis: usize,
        /// That axis' length.
        size: usize,
    },
    /// A sparse label outside `0..classes`.
    #[error("{op}: label {label} of sample {sample} is out of range for {classes} classes")]
    LabelOutOfRange {
        /// The loss.
        op: &'static str,
        /// The label given.
        label: i64,
        /// The number of classes (the length of the predictions' last axis).
        classes: usize,
        /// The sample's position in row-major order.
        sample: usize,
    },
    /// A conversion to a Rust scalar of a tensor that is not 0-d.
    #[error("{op}: only a 0-d tensor converts to a scalar, got shape {shape}")]
    NotScalar {
        /// The conversion (`to_bool`, `to_f64`, `to_i64`).
        op: &'static str,
        /// The tensor's shape.
        shape: Shape,
    },
    /// Integer division or remainder by zero.
    #[error("{op}: integer division by zero ({dtype})")]
    DivisionByZero {
        /// The operation.
        op: &'static str,
        /// The integer dtype.
        dtype: DType,
    },
    /// An argument outside its domain (a negative standard deviation, an empty split, ...).
    #[error("{op}: invalid argument `{arg}`: {reason}")]
    InvalidArgument {
        /// The function.
        op: &'static str,
        /// The argument's name.
        arg: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A commit whose base version is not the trainer's head (optimistic concurrency): the state derives from
    /// an older version of this trainer, or from none. Redo the step from the head.
    #[error("commit conflict: the state derives from {}, but the head is version {head}", fmt_base(.base))]
    Conflict {
        /// The trainer's head.
        head: u64,
        /// The committed version the refused state derives from (`None`: never committed).
        base: Option<u64>,
    },
    /// A commit of a state that derives from a version of another trainer, or from a checkpoint (whose trainer
    /// is unknown): version numbers alone cannot tell trainers apart, so the trainer's id is checked first.
    ///
    /// # Examples
    /// ```
    /// use purestate::{Error, StateStore, Trainer};
    /// let mut a: Trainer = Trainer::new(StateStore::new());
    /// let b: Trainer = Trainer::new(StateStore::new());
    /// let err = a.commit(b.state().clone()).unwrap_err(); // both heads are version 0
    /// assert!(matches!(err, Error::ForeignState { trainer, origin: Some(o), base: 0 }
    ///     if trainer == a.id() && o == b.id()));
    /// assert_eq!(err.to_string(), format!(
    ///     "commit of a foreign state: it derives from version 0 of {}, but this is {}", b.id(), a.id()));
    /// ```
    #[error(
        "commit of a foreign state: it derives from version {base} of {}, but this is {trainer}",
        fmt_origin(.origin)
    )]
    ForeignState {
        /// The trainer asked to commit.
        trainer: TrainerId,
        /// The trainer whose version the state derives from (`None`: a store loaded from a checkpoint, whose
        /// trainer is unknown).
        origin: Option<TrainerId>,
        /// The version of `origin` the state derives from.
        base: u64,
    },
    /// A version number the trainer never issued.
    #[error("unknown version {version}")]
    UnknownVersion {
        /// The version asked for.
        version: u64,
    },
    /// A version the retention policy has pruned.
    #[error("version {version} was pruned by the retention policy")]
    Pruned {
        /// The version asked for.
        version: u64,
    },
    /// An optimizer used before `build`.
    #[error("optimizer `{optimizer}` is not built: call `build(&mut state, &vars)` first")]
    NotBuilt {
        /// The optimizer's name.
        optimizer: String,
    },
    /// A gradient for a variable the optimizer was not built for.
    #[error("`{path}`: gradient for a variable the optimizer was not built for")]
    UnknownGradient {
        /// The variable's path.
        path: String,
    },
    /// A gradient for a non-trainable variable.
    #[error("`{path}`: gradient for a non-trainable variable")]
    FrozenGradient {
        /// The variable's path.
        path: String,
    },
    /// A trainable variable the optimizer was built for has no gradient.
    #[error("`{path}`: no gradient for a trainable variable (allow it with `allow_missing_gradients(true)`)")]
    MissingGradient {
        /// The variable's path.
        path: String,
    },
    /// A version committed without a step record, which replay needs.
    #[error("version {version} was committed without a step record; replay needs `commit_with`")]
    MissingRecord {
        /// The version without a record.
        version: u64,
    },
    /// A tag that names no version.
    #[error("unknown tag `{tag}`")]
    UnknownTag {
        /// The tag asked for.
        tag: String,
    },
    /// A state with a non-finite value refused by the trainer's divergence guard.
    #[error("`{path}`: non-finite value in a state derived from {}", fmt_base(.base))]
    NonFinite {
        /// The first variable holding a NaN or an infinity.
        path: String,
        /// The version the refused state derives from.
        base: Option<u64>,
    },
    /// A variable assigned different values by the micro-batches of one step (or by micro-batches on several
    /// replicas) when nothing says how to combine them: its aggregation is `none` (or its synchronization is
    /// `none`). Bit-identical values (a seed state every micro-batch advanced alike) are one value.
    #[error("`{path}`: assigned different values by {micro_batches} micro-batches, but its {option} is `none`; give it an aggregation (mean, sum, only_first_replica)")]
    ReplicaConflict {
        /// The variable's path.
        path: String,
        /// How many micro-batches assigned it (one per replica without micro-batching).
        micro_batches: usize,
        /// `"aggregation"` or `"synchronization"`.
        option: &'static str,
    },
    /// A global batch that cannot be split as asked among replicas and micro-batches: a batch that is not a
    /// whole number of micro-batches (unless a shorter last one is allowed), or more replicas than
    /// micro-batches (or examples).
    #[error("a batch of {batch_len} examples on {replicas} replicas{}: {reason}", fmt_micro(.micro_batch))]
    BatchSplit {
        /// Examples in the global batch.
        batch_len: usize,
        /// The micro-batch size, if the runner has one.
        micro_batch: Option<usize>,
        /// The number of replicas.
        replicas: usize,
        /// Why it cannot be split.
        reason: String,
    },
    /// A run resumed with another micro-batch size than it was recorded with: the reduction tree, and so the
    /// trajectory, would change.
    #[error("the run was recorded with {}, but this runner uses {}: resume with the recorded size", fmt_micro_size(&Some(*.recorded)), fmt_micro_size(.got))]
    MicroBatchMismatch {
        /// The recorded micro-batch size.
        recorded: usize,
        /// This runner's (`None`: one micro-batch per replica).
        got: Option<usize>,
    },
    /// A replica whose step failed (reported to the other MPI ranks; in process, the step's own error is
    /// returned instead).
    #[error("replica {replica} failed: {reason}")]
    ReplicaFailed {
        /// The replica (MPI rank) whose step failed.
        replica: usize,
        /// Its error's message.
        reason: String,
    },
    /// A replica whose state's fingerprint differs from replica 0's.
    #[error("replica {replica} holds state {got}, but replica 0 holds {expected}")]
    ReplicaDivergence {
        /// The first replica (in rank order) whose fingerprint differs.
        replica: usize,
        /// Replica 0's fingerprint.
        expected: Fingerprint,
        /// That replica's fingerprint.
        got: Fingerprint,
    },
    /// An MPI operation that failed, or a message from another rank that could not be decoded.
    #[error("mpi {op}: {reason}")]
    Mpi {
        /// The operation (`initialize`, `decode`, ...).
        op: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A file system error, with the file involved.
    #[error("{}: {source}", .file.display())]
    Io {
        /// The file read or written.
        file: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file that is not a valid checkpoint (truncated, corrupted, foreign).
    #[error("{}: corrupt checkpoint: {reason}", .file.display())]
    Corrupt {
        /// The file read.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A checkpoint tensor whose dtype has no purestate element type (float8, 4-bit floats, complex).
    #[error("{}: `{path}`: unsupported tensor dtype {dtype}", .file.display())]
    UnsupportedTensorDType {
        /// The file read.
        file: PathBuf,
        /// The tensor's name in the file.
        path: String,
        /// The safetensors dtype name, for example `F8_E4M3`.
        dtype: String,
    },
    /// `create_run` on a directory that already holds a run (or other files).
    #[error("{}: the directory already holds {what}; open it with `open_run` or choose another directory", .dir.display())]
    RunExists {
        /// The run directory.
        dir: PathBuf,
        /// What it holds: `a run` or `files that are not a run`.
        what: &'static str,
    },
    /// `open_run` on a directory that is not a run (no `RUN` header file, or a header of another format).
    #[error("{}: not a purestate run directory: {reason}", .dir.display())]
    NotARun {
        /// The directory.
        dir: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// A run directory written by a newer format than this purestate reads.
    #[error("{}: run format version {found} is newer than this purestate reads ({supported})", .file.display())]
    RunFormatTooNew {
        /// The header file.
        file: PathBuf,
        /// The version it records.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A second writer on a run directory another trainer (in this or another process) holds for writing.
    #[error("{}: the run is open for writing elsewhere (lock held); open it read-only to inspect it", .file.display())]
    RunLocked {
        /// The lock file.
        file: PathBuf,
    },
    /// A journal entry whose checksum or contents are wrong before the journal's end: the journal is damaged,
    /// not torn, so nothing is truncated.
    #[error("{}: corrupt journal entry at byte offset {offset}: {reason}", .file.display())]
    JournalCorrupt {
        /// The journal file.
        file: PathBuf,
        /// Byte offset of the damaged entry.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A stored value whose bytes do not hash to the digest it is filed under, or cannot be decoded.
    #[error("{}: `{path}`: corrupt object: {reason}", .file.display())]
    ObjectCorrupt {
        /// The object file.
        file: PathBuf,
        /// The variable whose value it holds.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A stored state names a value whose object file is missing.
    #[error("{}: `{path}`: object of version {version} is missing", .file.display())]
    ObjectMissing {
        /// The object file expected.
        file: PathBuf,
        /// The variable whose value it holds.
        path: String,
        /// The stored version that needs it.
        version: u64,
    },
    /// A step record in the journal that does not deserialize into the trainer's record type.
    #[error("{}: record of version {version} does not deserialize: {reason}", .file.display())]
    RecordDecode {
        /// The journal file.
        file: PathBuf,
        /// The version whose record it is.
        version: u64,
        /// The deserializer's message.
        reason: String,
    },
    /// A write to a run opened read-only, or to a run whose background writer stopped after an error.
    #[error("{}: the run is not writable: {reason}", .dir.display())]
    RunNotWritable {
        /// The run directory.
        dir: PathBuf,
        /// Why: opened read-only, or the earlier write error.
        reason: String,
    },
    /// A version whose state is neither in memory nor stored in the run directory.
    #[error("version {version}: its state is not stored; rebuild it with `materialize`")]
    NotStored {
        /// The version asked for.
        version: u64,
    },
    /// `materialize` replayed a step whose result does not hash to the fingerprint committed for it.
    #[error("version {version}: replayed state has fingerprint {got}, committed {expected}")]
    ReplayMismatch {
        /// The version whose replay differs.
        version: u64,
        /// The fingerprint committed.
        expected: Fingerprint,
        /// The fingerprint of the replayed state.
        got: Fingerprint,
    },
    /// A variable being differentiated was assigned inside the differentiated function: whether the update
    /// should see the assigned value or the gradient of the read one would be a silent choice.
    #[error("`{path}`: assigned inside the function differentiated with respect to it; differentiate with respect to other variables (`grad::wrt`), or mark it non-trainable")]
    AssignDifferentiated {
        /// The variable's path.
        path: String,
    },
    /// A differentiated function assigned variables (BatchNorm statistics, a seed generator's state, metrics),
    /// but was called through a form that returns no state, so the assignments would be lost.
    #[error("{op}: the function assigned {}, but this call returns no state; use `ValueAndGrad::call` or `grad::value_and_grad_aux`, whose output carries it", fmt_paths(.paths))]
    StateDropped {
        /// The call.
        op: &'static str,
        /// The paths of the variables assigned, in the order of their first assignment.
        paths: Vec<String>,
    },
    /// A layer was given an input it cannot take (wrong rank, channel count or size), or built with an
    /// option outside its domain.
    #[error("`{layer}`: {reason}, got input shape {got}")]
    LayerInput {
        /// The layer's path (its name scope, `model/layer`).
        layer: String,
        /// The input's shape (with the batch axis at call time, without it at build time).
        got: Shape,
        /// What the layer expects.
        reason: String,
    },
}

fn fmt_paths(paths: &[String]) -> String {
    let shown: Vec<String> = paths.iter().take(4).map(|p| format!("`{p}`")).collect();
    match paths.len() {
        n if n > 4 => format!("{} and {} more", shown.join(", "), n - 4),
        _ => shown.join(", "),
    }
}

fn fmt_micro(micro_batch: &Option<usize>) -> String {
    micro_batch.map(|m| format!(" in micro-batches of {m}")).unwrap_or_default()
}

fn fmt_micro_size(micro_batch: &Option<usize>) -> String {
    match micro_batch {
        Some(m) => format!("micro-batches of {m} examples"),
        None => "no micro-batch size (one micro-batch per replica)".into(),
    }
}

fn fmt_base(base: &Option<u64>) -> String {
    match base {
        Some(v) => format!("version {v}"),
        None => "no committed version".to_string(),
    }
}

fn fmt_origin(origin: &Option<TrainerId>) -> String {
    match origin {
        Some(id) => id.to_string(),
        None => "an unknown trainer (a loaded checkpoint)".to_string(),
    }
}

/// `Result` with purestate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
