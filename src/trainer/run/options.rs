//! [`RunOptions`] and [`Durability`]: when a run's entries become durable, which versions store their state,
//! what the disk and the memory keep; [`OpenReport`], what opening a run found.

#[allow(unused_imports)]
use super::*;

/// When journal entries become durable (fsynced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every commit, tag and rollback is durable (journal fsynced, head state stored) before the call returns.
    /// Safest and slowest: each commit waits for the disk.
    EveryCommit,
    /// Entries are buffered and made durable by the background writer after `versions` commits or `millis`
    /// milliseconds (checked at each commit), and at every [`Trainer::flush`], tag, rollback and drop. A crash
    /// loses at most the commits since the last durable point.
    Batched {
        /// Make durable after this many commits (`None`: no count limit).
        versions: Option<u64>,
        /// Make durable when this many milliseconds passed since the last durable point (`None`: no limit).
        millis: Option<u64>,
    },
}

impl Default for Durability {
    /// Batched: every 100 versions or 1000 ms.
    fn default() -> Self {
        Durability::Batched { versions: Some(100), millis: Some(1000) }
    }
}

/// How a trainer journals to its run directory.
///
/// The defaults: [`Durability::default`] (batched), the head's state stored at every durable point and at
/// tags (always), no extra periodic states, every stored state kept on disk, and in memory the head, tags,
/// version 0 and the 4 most recent states (the disk holds the rest).
///
/// # Examples
/// ```
/// use purestate::{Durability, Retention, RunOptions};
/// let opts = RunOptions::default()
///     .durability(Durability::Batched { versions: Some(10), millis: None })
///     .store_every(100)                                  // also store every 100th version
///     .disk_retention(Retention::keep_last(3).and_every(1000))
///     .memory_retention(Retention::keep_last(2));
/// assert_eq!(opts.get_durability(), Durability::Batched { versions: Some(10), millis: None });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    pub(super) durability: Durability,
    pub(super) store_every: Option<u64>,
    pub(super) disk_retention: Retention,
    pub(super) memory_retention: Retention,
    pub(super) queue: usize,
    pub(super) read_only: bool,
    pub(super) fail_writes_after: Option<u64>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            durability: Durability::default(),
            store_every: None,
            disk_retention: Retention::keep_all(),
            memory_retention: Retention::keep_last(4),
            queue: 4,
            read_only: false,
            fail_writes_after: None,
        }
    }
}

impl RunOptions {
    /// When entries become durable.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The durability chosen.
    pub fn get_durability(&self) -> Durability {
        self.durability
    }

    /// Also store the state of every version that is a multiple of `k` (beside the head at durable points and
    /// tagged versions, which are always stored). `0` stores no extra versions.
    pub fn store_every(mut self, k: u64) -> Self {
        self.store_every = (k > 0).then_some(k);
        self
    }

    /// Which stored states stay on disk (applied at every durable point). Version 0, tagged versions and the
    /// head are always kept; objects no kept state names are swept.
    pub fn disk_retention(mut self, retention: Retention) -> Self {
        self.disk_retention = retention;
        self
    }

    /// Which states stay in memory (the trainer's [`Retention`]); separate from the disk's.
    pub fn memory_retention(mut self, retention: Retention) -> Self {
        self.memory_retention = retention;
        self
    }

    /// How many pending writes (states to store, groups of entries) the background writer's queue holds before
    /// the trainer waits for it (backpressure). At least 1; default 4.
    pub fn queue(mut self, jobs: usize) -> Self {
        self.queue = jobs.max(1);
        self
    }

    /// Opens without taking the writer's lock: for inspecting a run, also while another process trains it.
    /// Commits, tags, rollbacks and flushes are then [`Error::RunNotWritable`]; nothing is written, and a torn
    /// tail is ignored rather than cut.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// A test aid: every write to the run fails, as on a full disk (`ErrorKind::StorageFull`), once `bytes`
    /// bytes have been written by this trainer. Use it to check how a program handles a full disk.
    pub fn fail_writes_after(mut self, bytes: u64) -> Self {
        self.fail_writes_after = Some(bytes);
        self
    }
}

/// What [`Trainer::open_run`] found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Bytes of torn tail after the last durable group (cut off unless opened read-only).
    pub torn_bytes: u64,
    /// Journal entries read.
    pub entries: usize,
    /// The head at the last durable point.
    pub head: u64,
    /// The matrix kernel of the process that created the run, as [`crate::kernels::gemm::kernel`] named it (`None`
    /// for a run written before it was recorded).
    pub matrix_kernel: Option<String>,
}

impl OpenReport {
    /// The kernel the run was created with, when this process runs another: products whose reduction is
    /// longer than one block round differently, so a replay here of steps computed there can diverge.
    pub fn other_matrix_kernel(&self) -> Option<&str> {
        self.matrix_kernel.as_deref().filter(|&k| k != crate::kernels::gemm::kernel())
    }
}

impl fmt::Display for OpenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} journal entries, head v{}", self.entries, self.head)?;
        if self.torn_bytes > 0 {
            write!(f, "; cut a torn tail of {} bytes", self.torn_bytes)?;
        }
        if let Some(k) = self.other_matrix_kernel() {
            write!(
                f,
                "; created with the {k} matrix kernel, this process runs {}: steps replayed here may round \
                 differently",
                crate::kernels::gemm::kernel()
            )?;
        }
        Ok(())
    }
}
