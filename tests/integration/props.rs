//! Property tests against simple reference models: stores vs plain maps (snapshot isolation), the trainer vs a
//! Vec of full copies (commit, rollback, retention), fingerprints vs contents.

use proptest::prelude::*;
use purestate::{Error, Retention, StateStore, Tensor, Trainer, Variable, VariableSpec};

/// The reference model of one store: (path, values) in creation order.
type Model = Vec<(String, Vec<f32>)>;

#[derive(Clone, Debug)]
enum StoreOp {
    Create { store: usize, len: usize, fill: i8 },
    Assign { store: usize, var: usize, fill: i8 },
    AssignAdd { store: usize, var: usize, by: i8 },
    Remove { store: usize, var: usize },
    Snapshot { store: usize },
}

fn store_op() -> impl Strategy<Value = StoreOp> {
    prop_oneof![
        (0..8usize, 1..5usize, any::<i8>()).prop_map(|(store, len, fill)| StoreOp::Create { store, len, fill }),
        (0..8usize, 0..16usize, any::<i8>()).prop_map(|(store, var, fill)| StoreOp::Assign { store, var, fill }),
        (0..8usize, 0..16usize, any::<i8>()).prop_map(|(store, var, by)| StoreOp::AssignAdd { store, var, by }),
        (0..8usize, 0..16usize).prop_map(|(store, var)| StoreOp::Remove { store, var }),
        (0..8usize).prop_map(|store| StoreOp::Snapshot { store }),
    ]
}

fn check(store: &StateStore, model: &Model) {
    let got: Model = store.iter().map(|(v, t)| (v.path().to_string(), t.to_vec::<f32>().unwrap())).collect();
    assert_eq!(&got, model);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// No change to any copy of a store is ever visible in another copy.
    #[test]
    fn snapshots_are_isolated(ops in proptest::collection::vec(store_op(), 1..60)) {
        let mut stores = vec![StateStore::new()];
        let mut models: Vec<Model> = vec![Vec::new()];
        let mut vars: Vec<Variable> = Vec::new();
        let mut next_name = 0;
        for op in ops {
            match op {
                StoreOp::Create { store, len, fill } => {
                    let s = store % stores.len();
                    let name = format!("v{next_name}");
                    next_name += 1;
                    let value = Tensor::from(vec![f32::from(fill); len]);
                    let var = stores[s].create(VariableSpec::new(value).name(name.clone())).unwrap();
                    models[s].push((name, vec![f32::from(fill); len]));
                    vars.push(var);
                }
                StoreOp::Assign { store, var, fill } | StoreOp::AssignAdd { store, var, by: fill } if vars.is_empty() => {
                    let _ = (store, var, fill);
                }
                StoreOp::Assign { store, var, fill } => {
                    let s = store % stores.len();
                    let v = &vars[var % vars.len()];
                    let value = Tensor::from(vec![f32::from(fill); v.size()]);
                    match models[s].iter_mut().find(|(p, _)| p == v.path()) {
                        Some((_, m)) => {
                            stores[s].assign(v, value).unwrap();
                            m.iter_mut().for_each(|x| *x = f32::from(fill));
                        }
                        None => {
                            let stale = matches!(stores[s].assign(v, value), Err(Error::StaleVariable { .. }));
                            prop_assert!(stale);
                        }
                    }
                }
                StoreOp::AssignAdd { store, var, by } => {
                    let s = store % stores.len();
                    let v = &vars[var % vars.len()];
                    match models[s].iter_mut().find(|(p, _)| p == v.path()) {
                        Some((_, m)) => {
                            stores[s].assign_add(v, Tensor::from(f32::from(by))).unwrap();
                            m.iter_mut().for_each(|x| *x += f32::from(by));
                        }
                        None => prop_assert!(stores[s].assign_add(v, Tensor::from(1.0f32)).is_err()),
                    }
                }
                StoreOp::Remove { store, var } if !vars.is_empty() => {
                    let s = store % stores.len();
                    let v = &vars[var % vars.len()];
                    match models[s].iter().position(|(p, _)| p == v.path()) {
                        Some(i) => {
                            stores[s].remove(v).unwrap();
                            models[s].remove(i);
                        }
                        None => prop_assert!(stores[s].remove(v).is_err()),
                    }
                }
                StoreOp::Remove { .. } => {}
                StoreOp::Snapshot { store } => {
                    let s = store % stores.len();
                    stores.push(stores[s].clone());
                    models.push(models[s].clone());
                }
            }
            for (store, model) in stores.iter().zip(&models) {
                check(store, model);
            }
        }
        // Incrementally kept fingerprints equal those of stores built afresh with the same contents.
        for (store, model) in stores.iter().zip(&models) {
            let mut fresh = StateStore::new();
            for (path, values) in model {
                fresh.create(VariableSpec::new(Tensor::from(values.clone())).name(path.clone())).unwrap();
            }
            prop_assert_eq!(store.fingerprint(), fresh.fingerprint());
        }
    }

    /// Equal fingerprints exactly when contents (paths, dtypes, shapes, bits) are equal.
    #[test]
    fn fingerprint_equal_iff_contents_equal(
        a in proptest::collection::vec((0..3u8, proptest::collection::vec(-2i8..2, 0..3)), 0..4),
        b in proptest::collection::vec((0..3u8, proptest::collection::vec(-2i8..2, 0..3)), 0..4),
    ) {
        let build = |spec: &[(u8, Vec<i8>)]| {
            let mut s = StateStore::new();
            let mut model = Vec::new();
            for (i, (name, values)) in spec.iter().enumerate() {
                let path = format!("n{name}_{i}");
                let vals: Vec<f32> = values.iter().map(|&x| f32::from(x)).collect();
                s.create(VariableSpec::new(Tensor::from(vals.clone())).name(path.clone())).unwrap();
                model.push((path, vals));
            }
            (s.fingerprint(), model)
        };
        let (fa, ma) = build(&a);
        let (fb, mb) = build(&b);
        prop_assert_eq!(fa == fb, ma == mb);
    }
}

#[derive(Clone, Debug)]
enum TrainerOp {
    Commit(i8),
    Rollback(usize),
    Tag,
}

fn trainer_op() -> impl Strategy<Value = TrainerOp> {
    prop_oneof![
        4 => any::<i8>().prop_map(TrainerOp::Commit),
        2 => any::<usize>().prop_map(TrainerOp::Rollback),
        1 => Just(TrainerOp::Tag),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The trainer behaves as a Vec of full copies with a head pointer, under any retention policy.
    #[test]
    fn trainer_matches_a_vec_of_full_copies(
        ops in proptest::collection::vec(trainer_op(), 1..50),
        keep_last in proptest::option::of(1..5usize),
        keep_every in proptest::option::of(1..4u64),
    ) {
        let mut state = StateStore::new();
        let w = state.create(VariableSpec::new(Tensor::from(vec![0.0f32; 3])).name("w")).unwrap();
        let retention = Retention { keep_last, keep_every };
        let mut trainer: Trainer = Trainer::new(state).with_retention(retention);
        // Reference: every version's full value and parent; the head; tagged versions.
        let mut copies: Vec<(Vec<f32>, Option<u64>)> = vec![(vec![0.0; 3], None)];
        let mut head = 0u64;
        let mut tagged: Vec<u64> = Vec::new();
        for op in ops {
            match op {
                TrainerOp::Commit(d) => {
                    let mut next = trainer.state().clone();
                    next.assign_add(&w, Tensor::from(f32::from(d))).unwrap();
                    let v = trainer.commit(next).unwrap();
                    let mut value = copies[head as usize].0.clone();
                    value.iter_mut().for_each(|x| *x += f32::from(d));
                    copies.push((value, Some(head)));
                    prop_assert_eq!(v as usize, copies.len() - 1);
                    head = v;
                }
                TrainerOp::Rollback(i) => {
                    let target = (i % copies.len()) as u64;
                    let newest = copies.len() as u64 - 1;
                    let kept = target == 0 || target == head || tagged.contains(&target)
                        || keep_last.is_none_or(|n| newest - target < n as u64)
                        || keep_every.is_some_and(|k| target.is_multiple_of(k));
                    match trainer.rollback(target) {
                        Ok(()) => { prop_assert!(kept); head = target; }
                        Err(Error::Pruned { .. }) => prop_assert!(!kept),
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                TrainerOp::Tag => {
                    trainer.tag(format!("t{head}")).unwrap();
                    tagged.push(head);
                }
            }
            prop_assert_eq!(trainer.head(), head);
            prop_assert_eq!(trainer.state().get(&w).unwrap().to_vec::<f32>().unwrap(), copies[head as usize].0.clone());
            for info in trainer.history() {
                prop_assert_eq!(info.parent, copies[info.version as usize].1);
                if info.retained {
                    let value = trainer.get(info.version).unwrap().get(&w).unwrap().to_vec::<f32>().unwrap();
                    prop_assert_eq!(&value, &copies[info.version as usize].0);
                }
            }
        }
    }
}
