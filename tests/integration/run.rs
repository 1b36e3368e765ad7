//! Durable runs: create, reopen, load, materialize, verify; every bad input of issue 14 as a typed error that
//! leaves the directory unchanged; SIGKILL crash tests; a model-based property test; thread-count invariance.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use purestate::trainer::run::{self, RunOptions};
use purestate::{
    checkpoint, init, Durability, Error, Fingerprint, Retention, StateStore, Tensor, Trainer, VariableSpec,
};

/// A state with a large frozen table (stored once per run), a weight and a float64 counter.
fn initial() -> StateStore {
    let mut state = StateStore::new();
    state
        .create(VariableSpec::new(init::Ones).shape([20_000]).name("table").name_scope("frozen").trainable(false))
        .unwrap();
    state.create(VariableSpec::new(init::Zeros).shape([1024]).name("w")).unwrap();
    state.create(VariableSpec::new(init::Zeros).shape([4]).name("b").dtype(purestate::DType::Float64)).unwrap();
    state
}

/// The step that makes version `v`: a pure function of the state and its record.
fn step(mut state: StateStore, v: &u64) -> purestate::Result<StateStore> {
    let w = state.find("w")?;
    let b = state.find("b")?;
    state.assign_add(&w, Tensor::from(*v as f32 * 0.25))?;
    state.assign_add(&b, Tensor::from(1.0f64))?;
    Ok(state)
}

/// Commits steps until the head is `until` (records are version numbers: no rollbacks here).
fn advance(trainer: &mut Trainer<u64>, until: u64) {
    while trainer.head() < until {
        let v = trainer.head() + 1;
        let next = step(trainer.state().clone(), &v).unwrap();
        trainer.commit_with(next, v).unwrap();
    }
}

/// The fingerprints of versions 0..=n of the uninterrupted, in-memory run.
fn reference(n: u64) -> Vec<Fingerprint> {
    let mut trainer: Trainer<u64> = Trainer::new(initial());
    let mut fps = vec![trainer.fingerprint(0).unwrap()];
    for v in 1..=n {
        let next = step(trainer.state().clone(), &v).unwrap();
        trainer.commit_with(next, v).unwrap();
        fps.push(trainer.fingerprint(v).unwrap());
    }
    fps
}

fn batched(versions: u64) -> RunOptions {
    RunOptions::default().durability(Durability::Batched { versions: Some(versions), millis: None })
}

/// Every file under `dir` and its bytes (to show that a failed call changed nothing).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.insert(path.clone(), fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

fn objects(dir: &Path) -> Vec<PathBuf> {
    snapshot(&dir.join("objects"))
        .into_keys()
        .filter(|p| !p.file_name().unwrap().to_str().unwrap().starts_with('.'))
        .collect()
}

/// A finished run of 12 versions with a tag at 5, every state stored, in `dir/run`.
fn small_run(dir: &Path) -> PathBuf {
    let path = dir.join("run");
    let mut trainer = Trainer::create_run(&path, initial(), batched(4).store_every(1)).unwrap();
    advance(&mut trainer, 5);
    trainer.tag("five").unwrap();
    advance(&mut trainer, 12);
    trainer.flush().unwrap();
    path
}

#[test]
fn reopen_gives_the_same_history_records_tags_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run");
    let mut trainer = Trainer::create_run(&path, initial(), batched(3)).unwrap();
    advance(&mut trainer, 4);
    trainer.tag("four").unwrap();
    advance(&mut trainer, 9);
    trainer.rollback(4).unwrap();
    advance(&mut trainer, 4); // no-op: head is 4
    let next = step(trainer.state().clone(), &100).unwrap();
    trainer.commit_with(next, 100).unwrap(); // v10, child of v4
    let history = trainer.history();
    let fps: Vec<_> = (0..=10).map(|v| trainer.fingerprint(v).unwrap()).collect();
    drop(trainer); // flushes

    let reopened: Trainer<u64> = Trainer::open_run(&path, RunOptions::default()).unwrap();
    assert_eq!(reopened.head(), 10);
    assert_eq!(reopened.parent(10).unwrap(), Some(4));
    assert_eq!(reopened.version_of_tag("four").unwrap(), 4);
    assert_eq!(reopened.record(10).unwrap(), Some(&100));
    assert_eq!(reopened.record(7).unwrap(), Some(&7));
    assert_eq!((0..=10).map(|v| reopened.fingerprint(v).unwrap()).collect::<Vec<_>>(), fps);
    let strip = |h: Vec<purestate::VersionInfo>| {
        h.into_iter().map(|v| (v.version, v.parent, v.fingerprint, v.tags)).collect::<Vec<_>>()
    };
    assert_eq!(strip(reopened.history()), strip(history));
    assert_eq!(reopened.state().fingerprint(), fps[10]);
    assert_eq!(reopened.run_report().unwrap().torn_bytes, 0);
}

#[test]
fn load_materialize_export_import_and_rebind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run");
    let opts = batched(100).store_every(5).memory_retention(Retention::keep_last(1));
    let mut trainer = Trainer::create_run(&path, initial(), opts).unwrap();
    advance(&mut trainer, 12);
    let fps = reference(12);
    // v5 and v10 are stored; v7 is not, and not in memory.
    assert!(matches!(trainer.get(7), Err(Error::Pruned { version: 7 })));
    assert_eq!(trainer.load(5).unwrap().fingerprint(), fps[5]);
    assert!(matches!(trainer.load(7), Err(Error::NotStored { version: 7 })));
    assert_eq!(trainer.materialize(7, step).unwrap().fingerprint(), fps[7]);
    // A step that differs is caught at the first version it makes.
    let wrong = |s: StateStore, v: &u64| step(s, &(v + 1));
    assert!(matches!(trainer.materialize(8, wrong), Err(Error::ReplayMismatch { version: 6, .. })));
    // Rollback to a version only the disk holds.
    trainer.rollback(5).unwrap();
    assert_eq!(trainer.state().fingerprint(), fps[5]);
    // Export to safetensors and import as a new run.
    let file = dir.path().join("v10.safetensors");
    trainer.export(10, &file).unwrap();
    assert_eq!(checkpoint::load(&file).unwrap().fingerprint(), fps[10]);
    let imported: Trainer<u64> =
        Trainer::import_run(dir.path().join("imported"), &file, RunOptions::default()).unwrap();
    assert_eq!(imported.fingerprint(0).unwrap(), fps[10]);
    drop(trainer);

    // Reopened states are in a lineage of their own until `rebind` with a state of the user's model.
    let model = initial();
    let w = model.find("w").unwrap();
    let mut reopened: Trainer<u64> = Trainer::open_run(&path, RunOptions::default()).unwrap();
    assert!(reopened.state().get(&w).is_err());
    reopened.rebind(&model).unwrap();
    assert_eq!(reopened.state().get(&w).unwrap().to_vec::<f32>().unwrap()[0], 15.0 * 0.25);
    assert_eq!(reopened.state().fingerprint(), fps[5]);
    assert!(reopened.load(10).unwrap().get(&w).is_ok());
    let report = reopened.replay(0, 10, step).unwrap();
    assert!(report.is_bit_identical(), "{report}");
}

#[test]
fn a_frozen_table_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_run(dir.path());
    let summary = run::summary(&path).unwrap();
    assert_eq!(summary.head, 12);
    assert_eq!(summary.versions, 13);
    assert_eq!(summary.records, 12);
    assert_eq!(summary.stored, (0..=12).collect::<Vec<_>>());
    assert_eq!(summary.tags, [("five".to_string(), 5)]);
    // 13 states x (table + w + b), but the table is one object, and b/w differ per version.
    assert_eq!(summary.objects, 1 + 13 + 13);
    assert!(summary.dedup_ratio() > 5.0, "{summary:?}");
    assert!(run::verify(&path).unwrap().is_empty());
}

#[test]
fn disk_retention_sweeps_objects_but_keeps_tags_and_version_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run");
    let opts = batched(1).store_every(1).disk_retention(Retention::keep_last(2));
    let mut trainer = Trainer::create_run(&path, initial(), opts).unwrap();
    advance(&mut trainer, 3);
    trainer.tag("three").unwrap();
    advance(&mut trainer, 10);
    trainer.flush().unwrap();
    let summary = run::summary(&path).unwrap();
    assert_eq!(summary.stored, [0, 3, 9, 10]);
    assert_eq!(summary.objects, 1 + 2 * 4, "{summary:?}");
    assert!(run::verify(&path).unwrap().is_empty());
}

#[test]
fn create_on_a_run_or_a_non_empty_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_run(dir.path());
    let before = snapshot(&path);
    let err = Trainer::<u64>::create_run(&path, initial(), RunOptions::default()).unwrap_err();
    assert!(matches!(err, Error::RunExists { what: "a run", .. }), "{err}");
    fs::create_dir(dir.path().join("other")).unwrap();
    fs::write(dir.path().join("other/notes.txt"), b"x").unwrap();
    let err = Trainer::<u64>::create_run(dir.path().join("other"), initial(), RunOptions::default()).unwrap_err();
    assert!(matches!(err, Error::RunExists { .. }), "{err}");
    assert_eq!(snapshot(&path), before);
}

#[test]
fn not_a_run_and_newer_format_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = Trainer::<u64>::open_run(dir.path(), RunOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NotARun { .. }), "{err}");
    let path = small_run(dir.path());
    fs::write(path.join("RUN"), br#"{"format":"purestate.run","format_version":99}"#).unwrap();
    let before = snapshot(&path);
    let err = Trainer::<u64>::open_run(&path, RunOptions::default()).unwrap_err();
    assert!(matches!(err, Error::RunFormatTooNew { found: 99, supported: 2, .. }), "{err}");
    assert!(matches!(run::verify(&path), Err(Error::RunFormatTooNew { .. })));
    assert_eq!(snapshot(&path), before);
}

#[test]
fn the_run_records_its_matrix_kernel_and_a_replay_under_another_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_run(dir.path());
    let kernel = purestate::kernels::gemm::kernel();
    let header = fs::read_to_string(path.join("RUN")).unwrap();
    assert!(header.contains(&format!(r#""matrix_kernel":"{kernel}""#)), "{header}");
    // Reopened by this process: the same kernel, nothing to say.
    let trainer = Trainer::<u64>::open_run(&path, RunOptions::default()).unwrap();
    let report = trainer.run_report().unwrap();
    assert_eq!((report.matrix_kernel.as_deref(), report.other_matrix_kernel()), (Some(kernel), None));
    drop(trainer);
    // As if created on another machine: the report and a diverging replay name both kernels.
    fs::write(path.join("RUN"), br#"{"format":"purestate.run","format_version":2,"matrix_kernel":"elsewhere"}"#)
        .unwrap();
    let trainer = Trainer::<u64>::open_run(&path, RunOptions::default()).unwrap();
    let report = trainer.run_report().unwrap();
    assert_eq!(report.other_matrix_kernel(), Some("elsewhere"));
    assert!(report
        .to_string()
        .contains(&format!("created with the elsewhere matrix kernel, this process runs {kernel}")));
    let other_step = |s: StateStore, v: &u64| step(s, &(v + 1));
    let replay = trainer.replay(trainer.head() - 1, trainer.head(), other_step).unwrap();
    let cause = replay.divergence.as_ref().and_then(|d| d.cause.clone()).expect("a cause");
    assert!(cause.contains("elsewhere") && cause.contains(kernel), "{cause}");
    assert!(replay.to_string().contains("likely cause: the run was created with the elsewhere matrix kernel"));
    drop(trainer);
    // A run written before the kernel was recorded opens, and names no cause.
    fs::write(path.join("RUN"), br#"{"format":"purestate.run","format_version":2}"#).unwrap();
    let trainer = Trainer::<u64>::open_run(&path, RunOptions::default()).unwrap();
    assert_eq!(trainer.run_report().unwrap().matrix_kernel, None);
    let replay = trainer.replay(trainer.head() - 1, trainer.head(), other_step).unwrap();
    assert_eq!(replay.divergence.map(|d| d.cause), Some(None));
}

#[test]
fn a_flipped_byte_in_an_object_names_file_and_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_run(dir.path());
    // The object holding the head's `w`.
    let head = {
        let t: Trainer<u64> = Trainer::open_run(&path, RunOptions::default().read_only()).unwrap();
        t.state().clone()
    };
    let target = objects(&path)
        .into_iter()
        .find(|p| {
            let bytes = fs::read(p).unwrap();
            bytes.len() > 4096 && bytes.len() < 8000 && {
                let s = head.get(&head.find("w").unwrap()).unwrap().to_vec::<f32>().unwrap();
                bytes.ends_with(&s.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
            }
        })
        .unwrap();
    let mut bytes = fs::read(&target).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x01;
    fs::write(&target, &bytes).unwrap();
    let before = snapshot(&path);
    let err = Trainer::<u64>::open_run(&path, RunOptions::default()).unwrap_err();
    assert!(matches!(err, Error::ObjectCorrupt { ref file, ref path, .. } if file == &target && path == "w"), "{err}");
    let problems = run::verify(&path).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].file, target);
    assert!(problems[0].what.contains("`w`"), "{}", problems[0]);
    assert_eq!(snapshot(&path), before);
}

#[test]
fn a_missing_object_names_file_and_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_run(dir.path());
    let mut trainer: Trainer<u64> = Trainer::open_run(&path, RunOptions::default().read_only()).unwrap();
    // Remove every object of `b` but the head's: loading v3 must name the missing one.
    let v3 = trainer.load(3).unwrap();
    let b3 = v3.get(&v3.find("b").unwrap()).unwrap().to_vec::<f64>().unwrap();
    let target = objects(&path)
        .into_iter()
        .find(|p| fs::read(p).unwrap().ends_with(&b3.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()))
        .unwrap();
    fs::remove_file(&target).unwrap();
    let before = snapshot(&path);
    let err = trainer.load(3).unwrap_err();
    assert!(
        matches!(err, Error::ObjectMissing { ref file, ref path, version: 3 } if file == &target && path == "b"),
        "{err}"
    );
    let problems = run::verify(&path).unwrap();
    assert!(problems.iter().any(|p| p.file == target && p.what.contains("`b`")), "{problems:?}");
    assert_eq!(snapshot(&path), before);
}

#[test]
fn a_state_pruned_from_disk_is_not_pending() {
    // Every version stored, the disk keeping the last 2: after the flush, v1's state is pruned. Asking for it
    // is `NotStored` at once; it does not wait for (or write) another durable group.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run");
    let options =
        batched(100).store_every(1).disk_retention(Retention::keep_last(2)).memory_retention(Retention::keep_last(1));
    let mut trainer: Trainer<u64> = Trainer::create_run(&path, initial(), options).unwrap();
    advance(&mut trainer, 5);
    trainer.flush().unwrap();
    assert_eq!(run::summary(&path).unwrap().stored, [0, 4, 5]);
    let journal = fs::metadata(path.join("journal")).unwrap().len();
    let err = trainer.load(1).unwrap_err();
    assert!(matches!(err, Error::NotStored { version: 1 }), "{err}");
    assert_eq!(fs::metadata(path.join("journal")).unwrap().len(), journal, "no group written for a pruned state");
    assert_eq!(trainer.load(4).unwrap().fingerprint(), trainer.fingerprint(4).unwrap());
}

#[test]
fn a_corrupt_journal_entry_before_the_tail_is_an_error_and_nothing_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_run(dir.path());
    let journal = path.join("journal");
    let mut bytes = fs::read(&journal).unwrap();
    bytes[40] ^= 0x20; // inside the first entry (version 0's commit)
    fs::write(&journal, &bytes).unwrap();
    let before = snapshot(&path);
    let err = Trainer::<u64>::open_run(&path, RunOptions::default()).unwrap_err();
    assert!(matches!(err, Error::JournalCorrupt { ref file, offset: 8, .. } if file == &journal), "{err}");
    assert_eq!(snapshot(&path), before, "nothing truncated");
    assert!(!run::verify(&path).unwrap().is_empty());
}

#[test]
fn a_torn_tail_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_run(dir.path());
    let journal = path.join("journal");
    let len = fs::metadata(&journal).unwrap().len();
    fs::OpenOptions::new().append(true).open(&journal).unwrap().write_all(&[7, 0, 0, 0, 0xf8, 0xff]).unwrap();
    let reader: Trainer<u64> = Trainer::open_run(&path, RunOptions::default().read_only()).unwrap();
    assert_eq!(reader.run_report().unwrap().torn_bytes, 6);
    assert_eq!(fs::metadata(&journal).unwrap().len(), len + 6, "a reader does not cut");
    drop(reader);
    let trainer: Trainer<u64> = Trainer::open_run(&path, RunOptions::default()).unwrap();
    assert_eq!(trainer.run_report().unwrap().torn_bytes, 6);
    assert_eq!(trainer.head(), 12);
    drop(trainer);
    assert!(run::verify(&path).unwrap().is_empty());
}

#[test]
fn a_record_that_no_longer_deserializes_names_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run");
    let mut trainer: Trainer<String> = Trainer::create_run(&path, initial(), RunOptions::default()).unwrap();
    let next = step(trainer.state().clone(), &1).unwrap();
    trainer.commit_with(next, "lr=0.1".to_string()).unwrap();
    drop(trainer);
    let before = snapshot(&path);
    let err = Trainer::<u64>::open_run(&path, RunOptions::default()).unwrap_err();
    assert!(matches!(err, Error::RecordDecode { version: 1, .. }), "{err}");
    assert_eq!(snapshot(&path), before);
}

#[test]
fn a_second_writer_is_refused_and_readers_are_welcome() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run");
    let mut trainer: Trainer<u64> = Trainer::create_run(&path, initial(), batched(1)).unwrap();
    advance(&mut trainer, 3);
    trainer.flush().unwrap();
    let err = Trainer::<u64>::open_run(&path, RunOptions::default()).unwrap_err();
    assert!(matches!(err, Error::RunLocked { .. }), "{err}");
    let mut reader: Trainer<u64> = Trainer::open_run(&path, RunOptions::default().read_only()).unwrap();
    assert_eq!(reader.head(), 3);
    let next = reader.state().clone();
    assert!(matches!(reader.commit(next), Err(Error::RunNotWritable { .. })));
    assert!(matches!(reader.flush(), Err(Error::RunNotWritable { .. })));
    advance(&mut trainer, 5);
    drop(trainer);
    let again: Trainer<u64> = Trainer::open_run(&path, RunOptions::default()).unwrap();
    assert_eq!(again.head(), 5);
}

#[test]
fn a_full_disk_surfaces_at_the_next_call_and_loses_nothing_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run");
    // Enough for version 0 (table, w, b and its group) and a few groups more, not for the whole run.
    let opts = batched(1).fail_writes_after(120_000);
    let mut trainer: Trainer<u64> = Trainer::create_run(&path, initial(), opts).unwrap();
    let mut failure = None;
    for v in 1..200 {
        let next = step(trainer.state().clone(), &v).unwrap();
        match trainer.commit_with(next, v) {
            Ok(_) => {}
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let err = failure.expect("the budget runs out");
    assert!(
        matches!(err, Error::Io { ref file, ref source } if file.starts_with(&path) && source.kind() == std::io::ErrorKind::StorageFull),
        "{err}"
    );
    let head = trainer.head();
    assert!(matches!(trainer.flush(), Err(Error::RunNotWritable { .. })));
    drop(trainer);
    assert!(run::verify(&path).unwrap().is_empty());
    let reopened: Trainer<u64> = Trainer::open_run(&path, RunOptions::default()).unwrap();
    let fps = reference(head);
    assert!(reopened.head() <= head && reopened.head() > 0);
    assert_eq!(reopened.state().fingerprint(), fps[reopened.head() as usize]);
}

#[test]
fn every_commit_durability_survives_without_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run");
    let mut trainer: Trainer<u64> =
        Trainer::create_run(&path, initial(), RunOptions::default().durability(Durability::EveryCommit)).unwrap();
    advance(&mut trainer, 3);
    // What another process sees right now (the trainer is still open, nothing flushed explicitly).
    let reader: Trainer<u64> = Trainer::open_run(&path, RunOptions::default().read_only()).unwrap();
    assert_eq!(reader.head(), 3);
}

#[test]
fn objects_are_byte_identical_at_1_2_and_7_threads() {
    let mut dirs = Vec::new();
    let root = tempfile::tempdir().unwrap();
    for threads in [1, 2, 7] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let path = root.path().join(format!("t{threads}"));
        pool.install(|| {
            let mut state = StateStore::new();
            state.create(VariableSpec::new(init::RandomNormal::default()).shape([600, 700]).name("big")).unwrap();
            let mut trainer: Trainer<u64> = Trainer::create_run(&path, state, batched(2).store_every(1)).unwrap();
            for v in 1..=4u64 {
                let mut next = trainer.state().clone();
                let big = next.find("big").unwrap();
                let value = next.get(&big).unwrap();
                next.assign(&big, value.mul(&value).unwrap().add(v as f32).unwrap()).unwrap();
                trainer.commit_with(next, v).unwrap();
            }
            trainer.flush().unwrap();
        });
        dirs.push(path);
    }
    let contents = |p: &Path| -> BTreeMap<PathBuf, Vec<u8>> {
        snapshot(&p.join("objects")).into_iter().map(|(k, v)| (k.strip_prefix(p).unwrap().to_path_buf(), v)).collect()
    };
    let first = contents(&dirs[0]);
    assert_eq!(first.len(), 5);
    for d in &dirs[1..] {
        assert!(contents(d) == first, "objects differ between thread counts");
    }
}

// ---- SIGKILL crash tests ----

const CRASH_ENV: &str = "PURESTATE_CRASH_RUN";
const CRASH_TOTAL: u64 = 3000;

/// The child process of the crash tests (a no-op unless `PURESTATE_CRASH_RUN` names a run directory): opens
/// or creates the run, says `ready vN`, then trains, flushing every 7 versions and saying `flushed vN` after
/// each flush returned.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CRASH_ENV) else { return };
    let path = PathBuf::from(path);
    let opts = batched(3).store_every(4);
    let mut trainer: Trainer<u64> = if path.join("RUN").exists() {
        Trainer::open_run(&path, opts).unwrap()
    } else {
        Trainer::create_run(&path, initial(), opts).unwrap()
    };
    let out = std::io::stdout();
    writeln!(out.lock(), "ready v{}", trainer.head()).unwrap();
    while trainer.head() < CRASH_TOTAL {
        let target = (trainer.head() + 7).min(CRASH_TOTAL);
        advance(&mut trainer, target);
        trainer.flush().unwrap();
        let mut o = out.lock();
        writeln!(o, "flushed v{}", trainer.head()).unwrap();
        o.flush().unwrap();
    }
}

#[test]
fn sigkill_at_random_points_loses_no_flushed_version_and_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run");
    let expected = reference(CRASH_TOTAL);
    let exe = std::env::current_exe().unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    for round in 0..24 {
        let mut child = Command::new(&exe)
            .args(["run::crash_child", "--exact", "--nocapture", "--test-threads", "1"])
            .env(CRASH_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        // The test harness prints its own lines around the child's (`running 1 test`, `test ... `).
        loop {
            let line = received.recv_timeout(Duration::from_secs(120)).expect("the child starts");
            if line.contains("ready v") {
                break;
            }
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 120));
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        child.kill().unwrap_or(()); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let flushed = received
            .try_iter()
            .filter_map(|l| l.split("flushed v").nth(1).and_then(|n| n.trim().parse::<u64>().ok()))
            .max()
            .unwrap_or(0);
        let trainer: Trainer<u64> = Trainer::open_run(&path, RunOptions::default().read_only()).unwrap();
        assert!(trainer.head() >= flushed, "round {round}: head v{} lost flushed v{flushed}", trainer.head());
        for v in 0..=trainer.latest() {
            assert_eq!(trainer.fingerprint(v).unwrap(), expected[v as usize], "round {round}: v{v}");
        }
        assert_eq!(trainer.state().fingerprint(), expected[trainer.head() as usize]);
    }
    assert!(kills >= 20, "only {kills} of the children were killed before they finished");
    let mut trainer: Trainer<u64> = Trainer::open_run(&path, batched(50)).unwrap();
    advance(&mut trainer, CRASH_TOTAL);
    assert_eq!(trainer.fingerprint(CRASH_TOTAL).unwrap(), expected[CRASH_TOTAL as usize]);
    drop(trainer);
    assert!(run::verify(&path).unwrap().is_empty());
}

// ---- model-based property test ----

#[derive(Clone, Debug)]
enum Op {
    Commit(u8),
    Tag(u8),
    RollbackToTag(u8),
    Flush,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<u8>().prop_map(Op::Commit),
        1 => (0u8..3).prop_map(Op::Tag),
        1 => (0u8..3).prop_map(Op::RollbackToTag),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

fn bump(state: &StateStore, by: u8) -> StateStore {
    let mut next = state.clone();
    let w = next.find("w").unwrap();
    next.assign_add(&w, Tensor::from(f32::from(by))).unwrap();
    next
}

/// `open_run` for writing right after the previous writer dropped. The crash test of this binary spawns
/// children concurrently: between its fork and exec a child holds copies of every descriptor, the lock file's
/// included, so the `flock` may outlive its owner by that window; a fresh writer then sees `RunLocked`.
fn open_retrying(path: &Path, opts: RunOptions) -> Trainer<u32> {
    for _ in 0..100 {
        match Trainer::open_run(path, opts.clone()) {
            Err(Error::RunLocked { .. }) => std::thread::sleep(Duration::from_millis(20)),
            other => return other.unwrap(),
        }
    }
    panic!("the run stayed locked")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn a_run_keeps_the_history_of_an_in_memory_trainer(ops in prop::collection::vec(op(), 1..24)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        let opts = batched(3).store_every(2).memory_retention(Retention::keep_last(1));
        let mut state = StateStore::new();
        state.create(VariableSpec::new(init::Zeros).shape([8]).name("w")).unwrap();
        let mut model: Trainer<u32> = Trainer::new(state.clone());
        let mut run: Trainer<u32> = Trainer::create_run(&path, state, opts.clone()).unwrap();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Commit(by) => {
                    model.commit_with(bump(model.state(), by), i as u32).unwrap();
                    run.commit_with(bump(run.state(), by), i as u32).unwrap();
                }
                Op::Tag(t) => {
                    model.tag(format!("t{t}")).unwrap();
                    run.tag(format!("t{t}")).unwrap();
                }
                Op::RollbackToTag(t) => {
                    if let Ok(v) = model.version_of_tag(&format!("t{t}")) {
                        model.rollback(v).unwrap();
                        run.rollback(v).unwrap();
                    }
                }
                Op::Flush => run.flush().unwrap(),
                Op::Reopen => {
                    drop(run);
                    run = open_retrying(&path, opts.clone());
                }
            }
            prop_assert_eq!(run.head(), model.head());
            prop_assert_eq!(run.state().fingerprint(), model.state().fingerprint());
        }
        drop(run);
        let run: Trainer<u32> = open_retrying(&path, opts);
        let strip = |h: Vec<purestate::VersionInfo>| h.into_iter().map(|v| (v.version, v.parent, v.fingerprint, v.tags)).collect::<Vec<_>>();
        prop_assert_eq!(strip(run.history()), strip(model.history()));
        for v in 0..=model.latest() {
            prop_assert_eq!(run.record(v).unwrap(), model.record(v).unwrap());
        }
        prop_assert!(run::verify(&path).unwrap().is_empty());
    }
}
