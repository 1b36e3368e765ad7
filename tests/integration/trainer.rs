//! Trainer: versions, conflicts, rollback, tags, retention, history, the divergence guard.

use purestate::{init, Error, Retention, StateStore, Tensor, Trainer, Variable, VariableSpec};

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
fn replay_needs_records_and_a_retained_start() {
    let (mut trainer, w) = setup();
    trainer.commit(step(&trainer, &w, 1.0)).unwrap();
    assert!(matches!(trainer.replay(0, 1, lr_step(&w)), Err(Error::MissingRecord { version: 1 })));
    assert!(matches!(trainer.replay(5, 1, lr_step(&w)), Err(Error::UnknownVersion { version: 5 })));
}
