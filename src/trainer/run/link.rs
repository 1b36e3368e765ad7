//! [`Link`]: a trainer's attachment to its run directory (the path table, the writer's queue, the journal
//! entries of a commit, durable points), and the reading of stored states back into a store.

#[allow(unused_imports)]
use super::*;

/// The encoder of a trainer's records (JSON), captured where `R: Serialize` is known.
pub(super) type Encode<R> = fn(&R) -> serde_json::Result<Vec<u8>>;

/// A trainer's attachment to its run directory.
pub(crate) struct Link<R> {
    pub(super) dir: PathBuf,
    pub(super) options: RunOptions,
    pub(super) encode: Encode<R>,
    /// Encoded entries not yet handed to the writer.
    pub(super) buf: Vec<u8>,
    pub(super) since_durable: u64,
    pub(super) last_durable: Instant,
    /// The journal's path table and each variable's digest in the head's state, to journal only what a commit
    /// changed.
    pub(super) paths: Paths,
    /// The commit entry being encoded (its buffers reused from commit to commit).
    pub(super) commit: Commit,
    pub(super) head_state: StateStore,
    pub(super) shared: Arc<Shared>,
    pub(super) jobs: Option<SyncSender<Job>>,
    pub(super) thread: Option<JoinHandle<()>>,
    /// States loaded from disk are built in this store's lineage, so its handles work on them.
    pub(super) template: Option<StateStore>,
    /// The message of a write error already reported.
    pub(super) failed: Option<String>,
    pub(super) report: OpenReport,
    /// Versions sent to the writer to store since the last group was sent (the next group journals them; then
    /// they are in `shared.stored`, or pruned).
    pub(super) requested: BTreeSet<u64>,
    /// The head and tagged versions, and the newest version, as of the last call (for the group at drop).
    pub(super) pinned: Vec<u64>,
    pub(super) latest: u64,
    pub(super) _lock: Option<Lock>,
}

impl<R> fmt::Debug for Link<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link").field("dir", &self.dir).field("options", &self.options).finish()
    }
}

/// A path's id in the journal's path table and its digest in the head's state (`None`: not in the head).
#[derive(Clone, Copy, Debug)]
pub(super) struct Slot {
    pub(super) id: u32,
    pub(super) digest: Option<u128>,
}

/// The journal's path table as the trainer writes it, with each path's digest in the head's state.
#[derive(Debug, Default)]
pub(super) struct Paths {
    pub(super) slots: HashMap<String, Slot>,
    /// Paths by id.
    pub(super) names: Vec<String>,
    /// Ids below this are declared by an entry already encoded.
    pub(super) declared: usize,
    /// Variables in the head's state.
    pub(super) head_len: usize,
}

impl Paths {
    /// The table of a journal (every path declared), with no head.
    pub(super) fn from_table(names: Vec<String>) -> Paths {
        let slots = names.iter().enumerate().map(|(id, p)| (p.clone(), Slot { id: id as u32, digest: None })).collect();
        Paths { slots, declared: names.len(), names, head_len: 0 }
    }

    /// A new path, not declared yet; returns its id.
    pub(super) fn add(&mut self, path: &str, digest: Option<u128>) -> u32 {
        let id = self.names.len() as u32;
        self.names.push(path.to_string());
        self.slots.insert(path.to_string(), Slot { id, digest });
        id
    }

    /// Makes `state` the head.
    pub(super) fn set_head(&mut self, state: &StateStore) {
        for slot in self.slots.values_mut() {
            slot.digest = None;
        }
        for e in state.entries() {
            let digest = digest_of(e);
            match self.slots.get_mut(e.var.path()) {
                Some(slot) => slot.digest = Some(digest),
                None => {
                    self.add(e.var.path(), Some(digest));
                }
            }
        }
        self.head_len = state.len();
    }
}

pub(super) fn digest_of(e: &crate::store::Entry) -> u128 {
    e.cache.map_or_else(|| crate::store::variable_digest(e.var.path(), &e.value), |f| f.digest)
}

impl<R> Link<R> {
    pub(super) fn writable(&self) -> bool {
        self.jobs.is_some()
    }

    /// Reports a pending write error (once; afterwards every write is [`Error::RunNotWritable`]).
    pub(super) fn ready(&mut self) -> Result<()> {
        if !self.writable() {
            let reason = self.failed.clone().unwrap_or_else(|| "it was opened read-only".into());
            return Err(Error::RunNotWritable { dir: self.dir.clone(), reason });
        }
        if let Some(reason) = &self.failed {
            return Err(Error::RunNotWritable {
                dir: self.dir.clone(),
                reason: format!("an earlier write failed: {reason}"),
            });
        }
        let failure = self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(e) = failure {
            self.failed = Some(e.to_string());
            return Err(e);
        }
        Ok(())
    }

    pub(super) fn send(&mut self, job: Job) -> Result<()> {
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job).is_ok());
        match sent {
            Some(true) => Ok(()),
            _ => {
                self.failed.get_or_insert_with(|| "the background writer stopped".into());
                self.ready()
            }
        }
    }

    /// Waits until every job sent so far is done, then reports a write error.
    pub(super) fn barrier(&mut self) -> Result<()> {
        if self.writable() {
            let (ack, done) = mpsc::sync_channel(1);
            self.send(Job::Barrier(ack))?;
            let _ = done.recv();
        }
        Ok(())
    }

    /// Buffers the commit entry of `version`.
    pub(super) fn journal_commit(
        &mut self,
        version: u64,
        parent: Option<u64>,
        fp: Fingerprint,
        record: Option<&R>,
        state: &StateStore,
    ) -> Result<()> {
        let extra = match record {
            Some(r) => (self.encode)(r).map_err(|e| Error::InvalidArgument {
                op: "Trainer::commit_with",
                arg: "record",
                reason: format!("the record does not serialize: {e}"),
            })?,
            None => Vec::new(),
        };
        // The digests are the ones the store cached when the state settled: nothing is hashed again here.
        let (paths, c) = (&mut self.paths, &mut self.commit);
        c.changed.clear();
        c.removed.clear();
        c.new_paths.clear();
        let mut present = 0;
        for e in state.entries() {
            let digest = digest_of(e);
            match paths.slots.get_mut(e.var.path()) {
                Some(slot) => {
                    present += usize::from(slot.digest.is_some());
                    if slot.digest != Some(digest) {
                        slot.digest = Some(digest);
                        c.changed.push((slot.id, digest));
                    }
                }
                None => c.changed.push((paths.add(e.var.path(), Some(digest)), digest)),
            }
        }
        if present < paths.head_len {
            for (path, slot) in paths.slots.iter_mut() {
                if slot.digest.is_some() && state.find(path).is_err() {
                    slot.digest = None;
                    c.removed.push(slot.id);
                }
            }
            c.removed.sort_unstable();
        }
        paths.head_len = state.len();
        c.new_paths.extend_from_slice(&paths.names[paths.declared..]);
        paths.declared = paths.names.len();
        c.v = version;
        c.parent = parent;
        c.fp = fp;
        c.record = record.is_some();
        journal::encode_commit(&mut self.buf, c, &extra);
        self.head_state = state.clone();
        Ok(())
    }

    /// After a commit: store the state if the policy asks, and make the batch durable when it is due.
    pub(super) fn after_commit(&mut self, version: u64, pinned: Vec<u64>, latest: u64) -> Result<()> {
        if self.options.store_every.is_some_and(|k| version.is_multiple_of(k)) {
            let state = self.head_state.clone();
            self.send(Job::Store { version, state })?;
            self.requested.insert(version);
        }
        self.since_durable += 1;
        self.pinned.clone_from(&pinned);
        self.latest = latest;
        match self.options.durability {
            Durability::EveryCommit => self.durable(version, pinned, latest, true),
            Durability::Batched { versions, millis } => {
                let due = versions.is_some_and(|n| self.since_durable >= n)
                    || millis.is_some_and(|ms| self.last_durable.elapsed() >= Duration::from_millis(ms));
                if due {
                    self.durable(version, pinned, latest, false)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Hands the buffered entries to the writer as one durable group (storing the head), waiting for it when
    /// `wait`.
    pub(super) fn durable(&mut self, head: u64, pinned: Vec<u64>, latest: u64, wait: bool) -> Result<()> {
        let entries = std::mem::take(&mut self.buf);
        let (ack, done) = if wait {
            let (a, d) = mpsc::sync_channel(1);
            (Some(a), Some(d))
        } else {
            (None, None)
        };
        let head_state = self.head_state.clone();
        self.pinned.clone_from(&pinned);
        self.latest = latest;
        self.send(Job::Group { entries, head, head_state, pinned, latest, ack })?;
        // The group journals every state requested so far (or prunes it): none is pending any more.
        self.requested.clear();
        self.since_durable = 0;
        self.last_durable = Instant::now();
        if let Some(done) = done {
            let _ = done.recv();
            return self.ready();
        }
        Ok(())
    }

    /// Reads the durable stored state of `version`, checked object by object and against `expected`.
    pub(super) fn read_stored(&self, version: u64, expected: Fingerprint) -> Result<StateStore> {
        let manifest = self.shared.stored.lock().unwrap_or_else(|p| p.into_inner()).get(&version).cloned();
        let manifest = manifest.ok_or(Error::NotStored { version })?;
        let state = read_state(&self.dir, version, &manifest, self.template.as_ref())?;
        let got = state.fingerprint();
        if got != expected {
            return Err(Error::JournalCorrupt {
                file: layout::journal_path(&self.dir),
                offset: 0,
                reason: format!("stored state of version {version} hashes to {got}, its commit says {expected}"),
            });
        }
        Ok(state)
    }
}

impl<R> Drop for Link<R> {
    fn drop(&mut self) {
        if self.writable() && self.failed.is_none() {
            let head = self.head_state.base().unwrap_or(0);
            let entries = std::mem::take(&mut self.buf);
            let (pinned, latest) = (std::mem::take(&mut self.pinned), self.latest.max(head));
            let job = Job::Group { entries, head, head_state: self.head_state.clone(), pinned, latest, ack: None };
            if let Some(jobs) = &self.jobs {
                let _ = jobs.send(job);
            }
        }
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads the objects of a stored state and builds it.
pub(super) fn read_state(
    dir: &Path,
    version: u64,
    manifest: &Manifest,
    template: Option<&StateStore>,
) -> Result<StateStore> {
    let digests = manifest.digest_values();
    let mut values = Vec::with_capacity(digests.len());
    for (record, &digest) in manifest.variables.iter().zip(&digests) {
        values.push(objects::read(dir, &record.path, digest, version)?);
    }
    build_state(manifest, values, template, &layout::journal_path(dir))
}

/// A state from a manifest and its values: in `template`'s lineage when given (its handles work on it), else
/// in a new one.
pub(super) fn build_state(
    manifest: &Manifest,
    values: Vec<Tensor>,
    template: Option<&StateStore>,
    file: &Path,
) -> Result<StateStore> {
    let header_like = crate::checkpoint::metadata::corrupt;
    let floatx = manifest
        .floatx
        .parse::<crate::dtype::DType>()
        .map_err(|_| header_like(file, format!("floatx `{}` is not a dtype", manifest.floatx)))?;
    let mut state = match template {
        Some(t) => t.clone(),
        None => StateStore::new().with_floatx(floatx)?.with_seed(Key::from_words(manifest.seed)),
    };
    let mut paths = HashSet::with_capacity(values.len());
    for (record, value) in manifest.variables.iter().zip(values) {
        paths.insert(record.path.as_str());
        match state.find(&record.path) {
            Ok(var) if template.is_some() => {
                if var.dtype() != value.dtype() || var.shape().dims() != value.dims() {
                    return Err(Error::ShapeMismatch {
                        path: record.path.clone(),
                        expected: var.shape().clone(),
                        got: value.shape(),
                    });
                }
                state.assign(&var, value)?;
                state.set_trainable(&var, record.trainable)?;
                state.set_overwrite_with_gradient(&var, record.overwrite_with_gradient)?;
            }
            _ => {
                state.create(record.spec(value, file)?)?;
            }
        }
    }
    if template.is_some() {
        for var in state.variables() {
            if !paths.contains(var.path()) {
                state.remove(&var)?;
            }
        }
    }
    state.settle();
    Ok(state)
}

/// Starts the writer thread of a run whose journal is `dir/journal`.
#[allow(clippy::too_many_arguments)]
pub(super) fn start<R: Serialize>(
    dir: &Path,
    options: RunOptions,
    lock: Lock,
    report: OpenReport,
    head_state: &StateStore,
    objects: HashSet<u128>,
    stored_digests: BTreeMap<u64, Vec<u128>>,
    stored: BTreeMap<u64, Arc<Manifest>>,
) -> Result<Link<R>> {
    let file = layout::journal_path(dir);
    let journal = OpenOptions::new().append(true).open(&file).map_err(io_err(&file))?;
    let journal_len = journal.metadata().map_err(io_err(&file))?.len();
    let shared = shared_with(stored);
    let writer = Writer::new(
        dir.to_path_buf(),
        journal,
        journal_len,
        Budget::new(options.fail_writes_after),
        options.disk_retention,
        objects,
        stored_digests,
        shared.clone(),
    );
    let (jobs, receiver) = mpsc::sync_channel(options.queue);
    let thread = std::thread::Builder::new()
        .name("purestate-run-writer".into())
        .spawn(move || writer.run(receiver))
        .map_err(io_err(dir))?;
    let mut link = Link::new(dir, options, report, head_state, shared);
    link.jobs = Some(jobs);
    link.thread = Some(thread);
    link._lock = Some(lock);
    Ok(link)
}

/// The state shared with a writer, knowing the durable stored states `stored`.
pub(super) fn shared_with(stored: BTreeMap<u64, Arc<Manifest>>) -> Arc<Shared> {
    let shared = Arc::new(Shared::default());
    *shared.stored.lock().unwrap_or_else(|p| p.into_inner()) = stored;
    shared
}

impl<R: Serialize> Link<R> {
    /// A link to the run in `dir` that does not write yet (no writer thread, no lock: [`start`] adds them).
    pub(super) fn new(
        dir: &Path,
        options: RunOptions,
        report: OpenReport,
        head_state: &StateStore,
        shared: Arc<Shared>,
    ) -> Link<R> {
        Link {
            dir: dir.to_path_buf(),
            options,
            encode: encode_json::<R>,
            buf: Vec::new(),
            since_durable: 0,
            last_durable: Instant::now(),
            paths: Paths::default(),
            commit: Commit::default(),
            head_state: head_state.clone(),
            shared,
            jobs: None,
            thread: None,
            template: None,
            failed: None,
            report,
            requested: BTreeSet::new(),
            pinned: Vec::new(),
            latest: 0,
            _lock: None,
        }
    }
}
