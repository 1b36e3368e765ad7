//! Trainer: versions, conflicts, trainer identity, rollback, tags, retention, history, the divergence guard.

use proptest::prelude::*;
use purestate::{checkpoint, init, Error, Retention, StateStore, Tensor, Trainer, Variable, VariableSpec};

fn setup() -> (Trainer<u32>, Variable) {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Zeros).shape([3]).name("w")).unwrap();
    (Trainer::new(state), w)
}

fn step(trainer: &Trainer<u32>, w: &Variable, by: f32) -> StateStore {
    let mut next = trainer.state().clone();
    next.assign_add(w, Tensor::from(by)).unwrap();
    next
}

#[test]
fn new_commits_version_zero() {
    let (trainer, _) = setup();
    assert_eq!(trainer.head(), 0);
    assert_eq!(trainer.state().base(), Some(0));
    assert_eq!(trainer.history().len(), 1);
    assert_eq!(trainer.history()[0].parent, None);
}

#[test]
fn commit_numbers_versions_and_records_parent_and_fingerprint() {
    let (mut trainer, w) = setup();
    let next = step(&trainer, &w, 1.0);
    let fp = next.fingerprint();
    let v1 = trainer.commit_with(next, 7).unwrap();
    assert_eq!(v1, 1);
    assert_eq!(trainer.parent(1).unwrap(), Some(0));
    assert_eq!(trainer.fingerprint(1).unwrap(), fp);
    assert_eq!(trainer.record(1).unwrap(), Some(&7));
    assert_eq!(trainer.state().base(), Some(1));
    assert_eq!(trainer.state().get(&w).unwrap().to_vec::<f32>().unwrap(), [1.0; 3]);
}

#[test]
fn commit_of_a_state_not_derived_from_the_head_is_a_conflict() {
    let (mut trainer, w) = setup();
    let a = step(&trainer, &w, 1.0);
    let b = step(&trainer, &w, 2.0);
    trainer.commit(a).unwrap();
    let err = trainer.commit(b).unwrap_err();
    assert!(matches!(err, Error::Conflict { head: 1, base: Some(0) }));
    assert_eq!(err.to_string(), "commit conflict: the state derives from version 0, but the head is version 1");
    assert_eq!(trainer.head(), 1);
    let fresh = StateStore::new();
    assert!(matches!(trainer.commit(fresh), Err(Error::Conflict { base: None, .. })));
}

#[test]
fn a_fresh_store_is_a_conflict_not_a_foreign_state() {
    let (mut trainer, _) = setup();
    let fresh = StateStore::new();
    assert_eq!((fresh.base(), fresh.trainer()), (None, None));
    let err = trainer.commit(fresh).unwrap_err();
    assert!(matches!(err, Error::Conflict { head: 0, base: None }), "{err}");
    assert_eq!(
        err.to_string(),
        "commit conflict: the state derives from no committed version, but the head is version 0"
    );
}

#[test]
fn states_carry_the_id_of_the_trainer_that_committed_their_base() {
    let (mut trainer, w) = setup();
    let id = trainer.id();
    assert_eq!(trainer.state().trainer(), Some(id));
    trainer.commit(step(&trainer, &w, 1.0)).unwrap();
    assert_eq!(trainer.state().trainer(), Some(id));
    assert_eq!(trainer.get(0).unwrap().trainer(), Some(id));
    let (other, _) = setup();
    assert_ne!(other.id(), id, "every Trainer::new takes a new id");
}

#[test]
fn commit_of_a_state_of_another_trainer_with_the_same_version_is_refused() {
    let (mut a, wa) = setup();
    let (mut b, wb) = setup();
    let from_b = step(&b, &wb, 1.0);
    assert_eq!(from_b.base(), Some(a.head()), "the version numbers match");
    let err = a.commit(from_b.clone()).unwrap_err();
    let (ida, idb) = (a.id(), b.id());
    assert!(
        matches!(err, Error::ForeignState { trainer, origin: Some(o), base: 0 } if trainer == ida && o == idb),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("commit of a foreign state: it derives from version 0 of {}, but this is {}", b.id(), a.id())
    );
    assert_eq!(a.head(), 0);
    assert_eq!(a.latest(), 0, "nothing committed");
    assert_eq!(a.state().get(&wa).unwrap().to_vec::<f32>().unwrap(), [0.0; 3]);
    assert_eq!(b.commit(from_b).unwrap(), 1, "its own trainer takes it");
}

#[test]
fn a_foreign_state_is_refused_before_its_version_is_compared() {
    let (mut a, wa) = setup();
    let (b, wb) = setup();
    a.commit(step(&a, &wa, 1.0)).unwrap();
    let err = a.commit(step(&b, &wb, 1.0)).unwrap_err();
    assert!(matches!(err, Error::ForeignState { base: 0, .. }), "not a Conflict: {err}");
}

#[test]
fn a_new_trainer_over_another_trainers_state_is_a_new_identity() {
    let (mut a, w) = setup();
    let mut b: Trainer<u32> = Trainer::new(a.state().clone());
    assert_eq!(b.state().trainer(), Some(b.id()));
    assert_eq!(a.state().trainer(), Some(a.id()), "a's own head is untouched");
    assert!(matches!(a.commit(step(&b, &w, 1.0)), Err(Error::ForeignState { .. })));
    assert!(matches!(b.commit(step(&a, &w, 1.0)), Err(Error::ForeignState { .. })));
    assert_eq!(a.commit(step(&a, &w, 1.0)).unwrap(), 1);
    assert_eq!(b.commit(step(&b, &w, 1.0)).unwrap(), 1);
}

#[test]
fn rollback_retention_and_builders_keep_the_id() {
    let (trainer, w) = setup();
    let id = trainer.id();
    let mut trainer = trainer.with_retention(Retention::keep_last(1)).with_nonfinite_guard(true);
    assert_eq!(trainer.id(), id);
    trainer.commit(step(&trainer, &w, 1.0)).unwrap();
    trainer.commit(step(&trainer, &w, 1.0)).unwrap();
    trainer.rollback(0).unwrap();
    assert_eq!(trainer.id(), id);
    assert_eq!(trainer.state().trainer(), Some(id));
    assert_eq!(trainer.commit(step(&trainer, &w, 1.0)).unwrap(), 3, "a branch off version 0 commits");
}

#[test]
fn partition_merge_and_restore_keep_the_trainer() {
    let (mut trainer, w) = setup();
    let (trainable, rest) = trainer.state().partition(|v| v.trainable());
    assert_eq!(trainable.trainer(), Some(trainer.id()));
    let whole = trainable.merge(rest).unwrap();
    assert_eq!(trainer.commit(whole).unwrap(), 1);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("v1.safetensors");
    checkpoint::save(trainer.state(), &file).unwrap();
    trainer.commit(step(&trainer, &w, 5.0)).unwrap();
    // Restoring into a state of the head keeps its base: the restored values commit as a child of the head.
    let mut restored = trainer.state().clone();
    checkpoint::restore(&mut restored, &file).unwrap();
    assert_eq!(restored.trainer(), Some(trainer.id()));
    assert_eq!(trainer.commit(restored).unwrap(), 3);
    assert_eq!(trainer.state().get(&w).unwrap().to_vec::<f32>().unwrap(), [0.0; 3]);
}

#[test]
fn a_loaded_checkpoint_is_foreign_to_every_trainer_but_starts_a_new_one() {
    let (mut trainer, w) = setup();
    trainer.commit(step(&trainer, &w, 1.0)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("v1.safetensors");
    checkpoint::save(trainer.state(), &file).unwrap();
    let loaded = checkpoint::load(&file).unwrap();
    assert_eq!((loaded.base(), loaded.trainer()), (Some(1), None), "ids are not saved");
    let err = trainer.commit(loaded.clone()).unwrap_err();
    assert!(matches!(err, Error::ForeignState { origin: None, base: 1, .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "commit of a foreign state: it derives from version 1 of an unknown trainer (a loaded checkpoint), but \
             this is {}",
            trainer.id()
        )
    );
    let resumed: Trainer = Trainer::new(loaded);
    assert_eq!((resumed.state().base(), resumed.state().trainer()), (Some(0), Some(resumed.id())));
}

#[test]
fn rollback_moves_the_head_and_keeps_abandoned_versions() {
    let (mut trainer, w) = setup();
    trainer.commit(step(&trainer, &w, 1.0)).unwrap();
    trainer.commit(step(&trainer, &w, 1.0)).unwrap();
    trainer.rollback(1).unwrap();
    assert_eq!(trainer.head(), 1);
    assert!(trainer.get(2).is_ok(), "abandoned version kept");
    let v3 = trainer.commit(step(&trainer, &w, 10.0)).unwrap();
    assert_eq!(v3, 3, "version numbers never repeat");
    assert_eq!(trainer.parent(3).unwrap(), Some(1));
    assert_eq!(trainer.lineage(0, 3).unwrap(), [0, 1, 3]);
    assert!(matches!(trainer.lineage(2, 3), Err(Error::InvalidArgument { .. })));
    assert_eq!(trainer.state().get(&w).unwrap().to_vec::<f32>().unwrap(), [11.0; 3]);
    assert!(matches!(trainer.rollback(99), Err(Error::UnknownVersion { version: 99 })));
}

#[test]
fn tags_name_versions() {
    let (mut trainer, w) = setup();
    trainer.commit(step(&trainer, &w, 1.0)).unwrap();
    trainer.tag("good").unwrap();
    trainer.commit(step(&trainer, &w, 1.0)).unwrap();
    assert_eq!(trainer.version_of_tag("good").unwrap(), 1);
    assert!(matches!(trainer.version_of_tag("bad"), Err(Error::UnknownTag { .. })));
    trainer.rollback(trainer.version_of_tag("good").unwrap()).unwrap();
    assert_eq!(trainer.history()[1].tags, ["good"]);
}

#[test]
fn retention_prunes_states_but_keeps_history_tags_and_version_zero() {
    let (trainer, w) = setup();
    let mut trainer = trainer.with_retention(Retention::keep_last(2).and_every(4));
    for i in 1..=9 {
        trainer.commit_with(step(&trainer, &w, 1.0), i).unwrap();
        if i == 3 {
            trainer.tag("three").unwrap();
        }
    }
    let kept: Vec<u64> = trainer.history().iter().filter(|v| v.retained).map(|v| v.version).collect();
    assert_eq!(kept, [0, 3, 4, 8, 9]);
    assert!(matches!(trainer.get(5), Err(Error::Pruned { version: 5 })));
    assert!(matches!(trainer.rollback(5), Err(Error::Pruned { .. })));
    assert_eq!(trainer.record(5).unwrap(), Some(&5), "records survive pruning");
    assert_eq!(trainer.history().len(), 10);
}

#[test]
fn diff_between_versions() {
    let (mut trainer, w) = setup();
    trainer.commit(step(&trainer, &w, 0.25)).unwrap();
    let diff = trainer.diff(0, 1).unwrap();
    assert_eq!(diff.changed[0].path, "w");
    assert_eq!(diff.changed[0].max_abs_diff, Some(0.25));
}

#[test]
fn nonfinite_guard_refuses_and_keeps_the_head() {
    let (trainer, w) = setup();
    let mut trainer = trainer.with_nonfinite_guard(true);
    let bad = step(&trainer, &w, f32::NAN);
    let err = trainer.commit(bad).unwrap_err();
    assert!(matches!(err, Error::NonFinite { ref path, base: Some(0) } if path == "w"));
    assert_eq!(trainer.head(), 0);
    trainer.commit(step(&trainer, &w, 1.0)).unwrap();
    assert_eq!(trainer.head(), 1);
}

fn lr_step(w: &Variable) -> impl FnMut(StateStore, &u32) -> purestate::Result<StateStore> + '_ {
    move |mut s, rec| {
        s.assign_add(w, Tensor::from(*rec as f32 * 0.1))?;
        Ok(s)
    }
}

#[test]
fn replay_follows_the_parent_chain_and_is_bit_identical() {
    let (mut trainer, w) = setup();
    let mut step = lr_step(&w);
    for rec in 1..=3 {
        let next = step(trainer.state().clone(), &rec).unwrap();
        trainer.commit_with(next, rec).unwrap();
    }
    trainer.rollback(2).unwrap();
    let next = step(trainer.state().clone(), &9).unwrap();
    let v4 = trainer.commit_with(next, 9).unwrap();
    let report = trainer.replay(0, v4, lr_step(&w)).unwrap();
    assert!(report.is_bit_identical(), "{report}");
    assert_eq!(report.steps, 3, "0 -> 1 -> 2 -> 4: the abandoned version 3 is not replayed");
    assert_eq!(trainer.head(), v4, "replay never moves the head");
    assert!(report.to_string().ends_with("bit-identical"));
}

#[test]
fn replay_reports_the_first_diverging_version_and_variable() {
    let (mut trainer, w) = setup();
    let mut step = lr_step(&w);
    for rec in 1..=4 {
        let next = step(trainer.state().clone(), &rec).unwrap();
        trainer.commit_with(next, rec).unwrap();
    }
    let mut calls = 0;
    let perturbed = |mut s: StateStore, rec: &u32| {
        calls += 1;
        let by = if calls == 3 { *rec as f32 * 0.1 + 0.5 } else { *rec as f32 * 0.1 };
        s.assign_add(&w, Tensor::from(by))?;
        Ok(s)
    };
    let report = trainer.replay(0, 4, perturbed).unwrap();
    let d = report.divergence.as_ref().expect("diverges");
    assert_eq!(d.version, 3);
    assert_eq!(report.steps, 3);
    assert_eq!(d.variables.len(), 1);
    assert_eq!(d.variables[0].0, "w");
    assert!((d.variables[0].1.unwrap() - 0.5).abs() < 1e-6);
    assert!(report.to_string().contains("diverged at v3"), "{report}");
}

#[test]
fn replayed_states_carry_the_trainer_and_version_of_their_committed_twin() {
    let (mut trainer, w) = setup();
    let mut step = lr_step(&w);
    let mut seen = Vec::new();
    for rec in 1..=3 {
        let state = trainer.state().clone();
        seen.push((state.trainer(), state.base()));
        let next = step(state, &rec).unwrap();
        trainer.commit_with(next, rec).unwrap();
    }
    let mut replayed = Vec::new();
    let mut inner = lr_step(&w);
    let report = trainer
        .replay(0, 3, |s, rec| {
            replayed.push((s.trainer(), s.base()));
            inner(s, rec)
        })
        .unwrap();
    assert!(report.is_bit_identical(), "{report}");
    assert_eq!(replayed, seen);
}

#[test]
fn replay_needs_records_and_a_retained_start() {
    let (mut trainer, w) = setup();
    trainer.commit(step(&trainer, &w, 1.0)).unwrap();
    assert!(matches!(trainer.replay(0, 1, lr_step(&w)), Err(Error::MissingRecord { version: 1 })));
    assert!(matches!(trainer.replay(5, 1, lr_step(&w)), Err(Error::UnknownVersion { version: 5 })));
}

#[derive(Clone, Debug)]
enum TwoTrainerOp {
    /// Step on trainer `t`'s head and commit to trainer `to`.
    Commit { t: usize, to: usize, by: i8 },
    /// Roll trainer `t` back to one of its versions.
    Rollback { t: usize, version: usize },
}

fn two_trainer_op() -> impl Strategy<Value = TwoTrainerOp> {
    prop_oneof![
        3 => (0..2usize, 0..2usize, any::<i8>()).prop_map(|(t, to, by)| TwoTrainerOp::Commit { t, to, by }),
        1 => (0..2usize, any::<usize>()).prop_map(|(t, version)| TwoTrainerOp::Rollback { t, version }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Two trainers over one initial state (so equal version numbers are common): a state stepped from one
    /// trainer's head commits to that trainer and is refused, with both ids named, by the other.
    #[test]
    fn states_of_two_trainers_never_commit_across(ops in proptest::collection::vec(two_trainer_op(), 1..40)) {
        let mut state = StateStore::new();
        let w = state.create(VariableSpec::new(init::Zeros).shape([2]).name("w")).unwrap();
        let mut trainers: [Trainer; 2] = [Trainer::new(state.clone()), Trainer::new(state)];
        prop_assert_ne!(trainers[0].id(), trainers[1].id());
        for op in ops {
            match op {
                TwoTrainerOp::Commit { t, to, by } => {
                    let mut next = trainers[t].state().clone();
                    next.assign_add(&w, Tensor::from(f32::from(by))).unwrap();
                    let (head, latest) = (trainers[to].head(), trainers[to].latest());
                    let (from_id, to_id) = (trainers[t].id(), trainers[to].id());
                    match trainers[to].commit(next) {
                        Ok(v) => {
                            prop_assert_eq!(t, to);
                            prop_assert_eq!(v, latest + 1);
                        }
                        Err(Error::ForeignState { trainer, origin, .. }) => {
                            prop_assert_ne!(t, to);
                            prop_assert_eq!(trainer, to_id);
                            prop_assert_eq!(origin, Some(from_id));
                            prop_assert_eq!(trainers[to].head(), head);
                            prop_assert_eq!(trainers[to].latest(), latest);
                        }
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                TwoTrainerOp::Rollback { t, version } => {
                    let target = (version as u64) % (trainers[t].latest() + 1);
                    trainers[t].rollback(target).unwrap();
                }
            }
            for trainer in &trainers {
                prop_assert_eq!(trainer.state().trainer(), Some(trainer.id()));
            }
        }
    }
}
