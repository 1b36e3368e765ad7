//! The background writer: one thread per writing trainer that owns the journal file and writes objects.
//!
//! The trainer sends it O(1) snapshots through a bounded channel (a full queue blocks the sender:
//! backpressure, not unbounded memory). For each state to store it writes the objects the run lacks, each
//! durable (file fsync, rename, then one fsync of each fan-out directory they went to) before the `stored`
//! entry that names them is appended. At a
//! durability point it stores the head if needed, applies the on-disk retention, appends the group (the
//! trainer's buffered entries, the `stored` and `prune` entries, a `durable` marker) in one write, fsyncs the
//! journal, and only then sweeps the objects no kept state references. The first error stops it: it is kept
//! in [`Shared::failure`] for the trainer's next call, and the journal is cut back to its last durable group.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use super::journal::{self, Manifest, Meta};
use super::objects::{self, Budget};
use crate::checkpoint::metadata::Header;
use crate::error::{Error, Result};
use crate::store::StateStore;
use crate::trainer::Retention;

/// What the trainer and its writer share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The first write error, until the trainer reports it.
    pub(crate) failure: Mutex<Option<Error>>,
    /// The stored states that are durable, by version.
    pub(crate) stored: Mutex<BTreeMap<u64, Arc<Manifest>>>,
}

/// Work for the writer.
#[derive(Debug)]
pub(crate) enum Job {
    /// Store the state of `version` (journaled with the next group).
    Store { version: u64, state: StateStore },
    /// A durability point: append `entries`, store the head if it is not stored, prune, mark durable, fsync.
    Group {
        entries: Vec<u8>,
        head: u64,
        head_state: StateStore,
        pinned: Vec<u64>,
        latest: u64,
        ack: Option<SyncSender<()>>,
    },
    /// Reply once every job sent before is done.
    Barrier(SyncSender<()>),
}

pub(crate) struct Writer {
    pub(crate) dir: PathBuf,
    pub(crate) journal: File,
    pub(crate) journal_len: u64,
    pub(crate) budget: Budget,
    pub(crate) retention: Retention,
    /// Objects on disk (durable).
    pub(crate) objects: HashSet<u128>,
    /// Digests of every stored state, durable or pending.
    pub(crate) stored: BTreeMap<u64, Vec<u128>>,
    pub(crate) shared: Arc<Shared>,
    /// Stored states whose objects are durable and whose entry waits for the next group.
    pending: Vec<(u64, Arc<Manifest>)>,
    failed: bool,
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        dir: PathBuf,
        journal: File,
        journal_len: u64,
        budget: Budget,
        retention: Retention,
        objects: HashSet<u128>,
        stored: BTreeMap<u64, Vec<u128>>,
        shared: Arc<Shared>,
    ) -> Writer {
        Writer {
            dir,
            journal,
            journal_len,
            budget,
            retention,
            objects,
            stored,
            shared,
            pending: Vec::new(),
            failed: false,
        }
    }

    /// Runs jobs until the channel closes.
    pub(crate) fn run(mut self, jobs: Receiver<Job>) {
        for job in jobs {
            match job {
                Job::Barrier(ack) => {
                    let _ = ack.send(());
                }
                Job::Store { version, state } if !self.failed => {
                    let result = self.store(version, &state);
                    self.check(result);
                }
                Job::Group { entries, head, head_state, pinned, latest, ack } if !self.failed => {
                    let result = self.group(entries, head, &head_state, &pinned, latest);
                    self.check(result);
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                }
                _ => {} // failed: drop the job (a dropped ack wakes its waiter)
            }
        }
    }

    fn check(&mut self, result: Result<()>) {
        if let Err(e) = result {
            self.failed = true;
            let mut failure = self.shared.failure.lock().unwrap_or_else(|p| p.into_inner());
            if failure.is_none() {
                *failure = Some(e);
            }
        }
    }

    /// Writes the objects of `state` that are not on disk, then queues its `stored` entry.
    pub(crate) fn store(&mut self, version: u64, state: &StateStore) -> Result<()> {
        if self.stored.contains_key(&version) {
            return Ok(());
        }
        let manifest = manifest_of(state);
        let digests = manifest.digest_values();
        let mut fans = BTreeSet::new();
        let mut written = Vec::new();
        for (entry, &digest) in state.entries().zip(&digests) {
            if self.objects.contains(&digest) {
                continue;
            }
            objects::write(&self.dir, entry.var.path(), &entry.value, digest, &self.budget, &mut fans)?;
            written.push(digest);
        }
        // One directory fsync per fan-out directory: every object of the state is durable after it.
        objects::sync(&fans)?;
        self.objects.extend(written);
        self.stored.insert(version, digests);
        self.pending.push((version, Arc::new(manifest)));
        Ok(())
    }

    fn group(
        &mut self,
        mut buf: Vec<u8>,
        head: u64,
        head_state: &StateStore,
        pinned: &[u64],
        latest: u64,
    ) -> Result<()> {
        self.store(head, head_state)?;
        for (v, manifest) in &self.pending {
            journal::encode(&mut buf, &Meta::Stored { v: *v, manifest: (**manifest).clone() }, b"");
        }
        let victims: Vec<u64> = self
            .stored
            .keys()
            .copied()
            .filter(|&v| v != head && !self.retention.keeps(v, latest, pinned.contains(&v)))
            .collect();
        if !victims.is_empty() {
            journal::encode(&mut buf, &Meta::Prune { versions: victims.clone() }, b"");
        }
        journal::encode(&mut buf, &Meta::Durable { head }, b"");
        let file = super::layout::journal_path(&self.dir);
        let written = self
            .budget
            .take(buf.len())
            .and_then(|()| self.journal.write_all(&buf))
            .and_then(|()| self.journal.sync_data());
        if let Err(source) = written {
            // Cut the partial group off so that the file ends at its last durable group (best effort: a reader
            // would treat it as a torn tail anyway).
            let _ = self.journal.set_len(self.journal_len);
            return Err(Error::Io { file, source });
        }
        self.journal_len += buf.len() as u64;
        {
            let mut stored = self.shared.stored.lock().unwrap_or_else(|p| p.into_inner());
            for (v, manifest) in self.pending.drain(..) {
                stored.insert(v, manifest);
            }
            for v in &victims {
                stored.remove(v);
            }
        }
        if !victims.is_empty() {
            for v in &victims {
                self.stored.remove(v);
            }
            let keep: HashSet<u128> = self.stored.values().flatten().copied().collect();
            objects::sweep(&self.dir, &keep);
            self.objects.retain(|d| keep.contains(d));
        }
        Ok(())
    }
}

/// The manifest of a settled state: floatx, seed, fingerprint, specs and digests in creation order.
pub(crate) fn manifest_of(state: &StateStore) -> Manifest {
    let header = Header::of(state);
    let digests = state
        .entries()
        .map(|e| {
            let digest = e.cache.map_or_else(|| crate::store::variable_digest(e.var.path(), &e.value), |f| f.digest);
            format!("{digest:032x}")
        })
        .collect();
    Manifest {
        floatx: header.floatx,
        seed: header.seed,
        fingerprint: header.fingerprint,
        variables: header.variables,
        digests,
    }
}
