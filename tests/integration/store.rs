//! StateStore and VariableSpec through the public API: creation rules, reads and writes, errors, snapshots.

use purestate::{init, Aggregation, DType, Error, Shape, StateStore, Synchronization, Tensor, VariableSpec};

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

#[test]
fn initializer_gets_shape_and_floatx() {
    let mut state = StateStore::new().with_floatx(DType::Float64).unwrap();
    let w = state.create(VariableSpec::new(init::Ones).shape([2, 3])).unwrap();
    assert_eq!(w.dtype(), DType::Float64);
    assert_eq!(w.shape(), &Shape::from([2, 3]));
    assert_eq!(w.ndim(), 2);
    assert_eq!(state.get(&w).unwrap().to_vec::<f64>().unwrap(), vec![1.0; 6]);
}

#[test]
fn floatx_must_be_a_float_dtype() {
    assert!(matches!(StateStore::new().with_floatx(DType::Int32), Err(Error::UnsupportedDType { .. })));
}

#[test]
fn value_keeps_its_dtype_unless_one_is_given() {
    let mut state = StateStore::new();
    let i = state.create(VariableSpec::new(Tensor::from([1i32, 2]))).unwrap();
    assert_eq!(i.dtype(), DType::Int32);
    let d = state.create(VariableSpec::new(Tensor::from([1.5f64]))).unwrap();
    assert_eq!(d.dtype(), DType::Float64);
    let h = state.create(VariableSpec::new(Tensor::from([1.5f64])).dtype("float16")).unwrap();
    assert_eq!(h.dtype(), DType::Float16);
    assert_eq!(state.get(&h).unwrap().to_f64_vec(), [1.5]);
}

#[test]
fn initializer_without_shape_is_an_error() {
    let mut state = StateStore::new();
    let err = state.create(VariableSpec::new(init::Zeros).name("k")).unwrap_err();
    assert!(matches!(err, Error::InvalidSpec { ref path, .. } if path == "k"), "{err}");
    assert!(err.to_string().contains("needs a shape"));
    assert!(state.is_empty());
}

#[test]
fn value_with_other_explicit_shape_is_an_error() {
    let mut state = StateStore::new();
    let err = state.create(VariableSpec::new(Tensor::from([1.0f32, 2.0])).shape([3]).name("b")).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }));
    assert_eq!(err.to_string(), "`b`: shape mismatch, expected (3,), got (2,)");
}

#[test]
fn bad_option_strings_are_errors_listing_the_allowed_values() {
    let mut state = StateStore::new();
    let err = state.create(VariableSpec::new(init::Zeros).shape([1]).dtype("float")).unwrap_err();
    assert!(matches!(err, Error::InvalidDType { .. }));
    let err = state.create(VariableSpec::new(init::Zeros).shape([1]).aggregation("avg")).unwrap_err();
    assert!(err.to_string().contains("none, mean, sum, only_first_replica"), "{err}");
    let err = state.create(VariableSpec::new(init::Zeros).shape([1]).synchronization("sometimes")).unwrap_err();
    assert!(matches!(err, Error::InvalidOption { option: "synchronization", .. }));
    assert!(state.is_empty());
}

#[test]
fn spec_options_reach_the_handle_and_the_store() {
    let mut state = StateStore::new();
    let w = state
        .create(
            VariableSpec::new(init::Zeros)
                .shape([4])
                .name("count")
                .name_scope("model/metrics")
                .trainable(false)
                .autocast(false)
                .overwrite_with_gradient(true)
                .aggregation(Aggregation::Sum)
                .synchronization("on_read"),
        )
        .unwrap();
    assert_eq!(w.path(), "model/metrics/count");
    assert_eq!(w.name(), "count");
    assert!(!w.autocast());
    assert_eq!(w.aggregation(), Aggregation::Sum);
    assert_eq!(w.synchronization(), Synchronization::OnRead);
    assert!(!state.trainable(&w).unwrap());
    assert!(state.overwrite_with_gradient(&w).unwrap());
    assert_eq!(state.find("model/metrics/count").unwrap(), w);
}

#[test]
fn defaults_follow_keras() {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Zeros).shape([1])).unwrap();
    assert!(state.trainable(&w).unwrap());
    assert!(w.autocast());
    assert!(!state.overwrite_with_gradient(&w).unwrap());
    assert_eq!(w.aggregation(), Aggregation::None);
    assert_eq!(w.synchronization(), Synchronization::Auto);
    assert!(state.constraint(&w).unwrap().is_none());
}

#[test]
fn names_with_slash_and_bad_scopes_are_errors() {
    let mut state = StateStore::new();
    let err = state.create(VariableSpec::new(init::Zeros).shape([1]).name("a/b")).unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }));
    let err = state.create(VariableSpec::new(init::Zeros).shape([1]).name("a").name_scope("x//y")).unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }));
    let err = state.create(VariableSpec::new(init::Zeros).shape([1]).name("")).unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }));
}

#[test]
fn automatic_names_count_up_per_store_and_skip_taken_paths() {
    let mut state = StateStore::new();
    state.create(VariableSpec::new(init::Zeros).shape([1]).name("variable_1")).unwrap();
    let a = state.create(VariableSpec::new(init::Zeros).shape([1])).unwrap();
    let b = state.create(VariableSpec::new(init::Zeros).shape([1])).unwrap();
    let c = state.create(VariableSpec::new(init::Zeros).shape([1]).name_scope("dense")).unwrap();
    assert_eq!([a.path(), b.path(), c.path()], ["variable", "variable_2", "dense/variable_3"]);
    let other = StateStore::new().create(VariableSpec::new(init::Zeros).shape([1]));
    assert_eq!(other.unwrap().path(), "variable");
}

#[test]
fn duplicate_paths_are_errors() {
    let mut state = StateStore::new();
    state.create(VariableSpec::new(init::Zeros).shape([1]).name("k").name_scope("d")).unwrap();
    let err = state.create(VariableSpec::new(init::Ones).shape([2]).name("k").name_scope("d")).unwrap_err();
    assert!(matches!(err, Error::DuplicatePath { ref path } if path == "d/k"));
    assert_eq!(state.len(), 1);
}

#[test]
fn assign_checks_shape_and_casts_to_the_variable_dtype() {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Zeros).shape([2]).name("w")).unwrap();
    state.assign(&w, Tensor::from([1i64, 2])).unwrap();
    assert_eq!(state.get(&w).unwrap().dtype(), DType::Float32);
    assert_eq!(f32s(&state.get(&w).unwrap()), [1.0, 2.0]);
    let err = state.assign(&w, Tensor::from([1.0f32, 2.0, 3.0])).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { ref path, .. } if path == "w"));
    assert_eq!(err.to_string(), "`w`: shape mismatch, expected (2,), got (3,)");
    assert_eq!(f32s(&state.get(&w).unwrap()), [1.0, 2.0], "a refused assign changes nothing");
}

#[test]
fn assign_add_and_sub_broadcast_and_promote_like_keras() {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Ones).shape([2, 3]).name("w")).unwrap();
    state.assign_add(&w, Tensor::from([1.0f32, 2.0, 3.0])).unwrap();
    assert_eq!(f32s(&state.get(&w).unwrap()), [2.0, 3.0, 4.0, 2.0, 3.0, 4.0]);
    state.assign_sub(&w, Tensor::from(0.5f32)).unwrap();
    assert_eq!(f32s(&state.get(&w).unwrap()), [1.5, 2.5, 3.5, 1.5, 2.5, 3.5]);
    let err = state.assign_add(&w, Tensor::from([1.0f32, 2.0])).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }));
    let err = state.assign_add(&w, Tensor::zeros([4, 2, 3], DType::Float32)).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "a value may not grow the variable");

    // int32 variable + float: computed in float32, truncated back (Keras: `self.assign(self + value)`).
    let c = state.create(VariableSpec::new(Tensor::from([-2i32, 1]))).unwrap();
    state.assign_add(&c, Tensor::from([0.5f32, 1.7])).unwrap();
    assert_eq!(state.get(&c).unwrap().to_vec::<i32>().unwrap(), [-1, 2]);
    let flag = state.create(VariableSpec::new(Tensor::from([true]))).unwrap();
    assert!(matches!(state.assign_sub(&flag, Tensor::from([true])), Err(Error::UnsupportedDType { .. })));
}

#[test]
fn assign_add_on_an_unshared_buffer_is_in_place() {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Zeros).shape([1000]).name("w")).unwrap();
    let before = state.get(&w).unwrap().as_ptr();
    state.assign_add(&w, Tensor::from(1.0f32)).unwrap();
    assert_eq!(state.get(&w).unwrap().as_ptr(), before, "no snapshot holds it: updated in place");
    let snapshot = state.clone();
    state.assign_add(&w, Tensor::from(1.0f32)).unwrap();
    assert_ne!(state.get(&w).unwrap().as_ptr(), before, "a snapshot holds it: copied");
    assert_eq!(snapshot.get(&w).unwrap().as_ptr(), before);
    assert_eq!(f32s(&snapshot.get(&w).unwrap())[0], 1.0);
    assert_eq!(f32s(&state.get(&w).unwrap())[0], 2.0);
}

#[test]
fn foreign_and_stale_handles_are_errors() {
    let mut a = StateStore::new();
    let mut b = StateStore::new();
    let wa = a.create(VariableSpec::new(init::Zeros).shape([1]).name("w")).unwrap();
    b.create(VariableSpec::new(init::Zeros).shape([1]).name("w")).unwrap();
    assert!(matches!(b.get(&wa), Err(Error::ForeignVariable { ref path }) if path == "w"));

    let snapshot = a.clone();
    let removed = a.remove(&wa).unwrap();
    assert_eq!(removed.size(), 1);
    assert!(matches!(a.get(&wa), Err(Error::StaleVariable { .. })));
    assert!(matches!(a.assign(&wa, Tensor::from([1.0f32])), Err(Error::StaleVariable { .. })));
    assert!(matches!(a.remove(&wa), Err(Error::StaleVariable { .. })));
    assert!(snapshot.get(&wa).is_ok(), "the snapshot keeps the removed variable");
    assert!(matches!(a.find("w"), Err(Error::UnknownPath { .. })));

    // Two branches of one snapshot never alias each other's variables.
    let mut left = snapshot.clone();
    let mut right = snapshot.clone();
    let l = left.create(VariableSpec::new(init::Zeros).shape([1]).name("x")).unwrap();
    let r = right.create(VariableSpec::new(init::Ones).shape([1]).name("y")).unwrap();
    assert_ne!(l, r);
    assert!(matches!(right.get(&l), Err(Error::StaleVariable { .. })));
}

#[test]
fn settable_attributes_are_versioned_with_the_store() {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Zeros).shape([1]).name("w")).unwrap();
    let before = state.clone();
    state.set_trainable(&w, false).unwrap();
    assert!(!state.trainable(&w).unwrap());
    assert!(before.trainable(&w).unwrap());
    assert_eq!(state.trainable_variables().len(), 0);
    assert_eq!(state.non_trainable_variables(), vec![w.clone()]);
    let diff = before.diff(&state);
    assert_eq!(diff.changed.len(), 1);
    assert!(diff.changed[0].attributes_changed && !diff.changed[0].value_changed);
}

#[test]
fn variables_iterate_in_creation_order() {
    let mut state = StateStore::new();
    let names = ["z", "a", "m", "b"];
    for n in names {
        state.create(VariableSpec::new(init::Zeros).shape([1]).name(n)).unwrap();
    }
    let paths: Vec<String> = state.variables().iter().map(|v| v.path().to_string()).collect();
    assert_eq!(paths, names);
}

#[test]
fn partition_and_merge_round_trip() {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Ones).shape([2]).name("w")).unwrap();
    let n = state.create(VariableSpec::new(init::Zeros).shape([1]).name("n").trainable(false)).unwrap();
    let (mut trainable, rest) = state.partition(|v| v.trainable());
    assert_eq!(trainable.variables(), vec![w.clone()]);
    assert_eq!(rest.variables(), vec![n.clone()]);
    trainable.assign(&w, Tensor::from([5.0f32, 6.0])).unwrap();
    let merged = trainable.merge(rest.clone()).unwrap();
    assert_eq!(merged.variables(), vec![w.clone(), n.clone()]);
    assert_eq!(f32s(&merged.get(&w).unwrap()), [5.0, 6.0]);
    assert!(matches!(rest.clone().merge(rest), Err(Error::DuplicatePath { .. })));
    assert!(matches!(StateStore::new().merge(state.clone()), Err(Error::ForeignVariable { .. })));
}

#[test]
fn diff_reports_added_removed_and_changed() {
    let mut a = StateStore::new();
    let w = a.create(VariableSpec::new(Tensor::from([1.0f32, 2.0])).name("w")).unwrap();
    let gone = a.create(VariableSpec::new(init::Zeros).shape([1]).name("gone")).unwrap();
    let mut b = a.clone();
    b.assign(&w, Tensor::from([1.0f32, 4.0])).unwrap();
    b.remove(&gone).unwrap();
    b.create(VariableSpec::new(init::Zeros).shape([1]).name("new")).unwrap();
    let diff = a.diff(&b);
    assert_eq!(diff.added, ["new"]);
    assert_eq!(diff.removed, ["gone"]);
    assert_eq!(diff.changed.len(), 1);
    assert_eq!(diff.changed[0].max_abs_diff, Some(2.0));
    assert!(a.diff(&a.clone()).is_empty());
    let text = diff.to_string();
    assert!(text.contains("+ new") && text.contains("- gone") && text.contains("~ w"), "{text}");
}

#[test]
fn fingerprint_depends_on_path_dtype_shape_and_bytes() {
    let make = |name: &str, t: Tensor| {
        let mut s = StateStore::new();
        s.create(VariableSpec::new(t).name(name)).unwrap();
        s.fingerprint()
    };
    let base = make("w", Tensor::from([1.0f32, 2.0]));
    assert_eq!(base, make("w", Tensor::from([1.0f32, 2.0])), "stable across stores");
    assert_ne!(base, make("v", Tensor::from([1.0f32, 2.0])));
    assert_ne!(base, make("w", Tensor::from([1.0f64, 2.0])));
    assert_ne!(base, make("w", Tensor::from([[1.0f32, 2.0]])));
    assert_ne!(base, make("w", Tensor::from([1.0f32, 2.5])));
    // A fixed value: the fingerprint is part of the checkpoint format and must not drift between releases.
    assert_eq!(base.to_string().len(), 32);
}

#[test]
fn repr_follows_keras() {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Zeros).shape([2, 2]).name("kernel").name_scope("dense")).unwrap();
    assert_eq!(
        state.repr(&w).unwrap(),
        "<Variable path=dense/kernel, shape=(2, 2), dtype=float32, value=[[0.0, 0.0], [0.0, 0.0]]>"
    );
    assert_eq!(format!("{w:?}"), "<Variable path=dense/kernel, shape=(2, 2), dtype=float32>");
}

#[test]
fn unseeded_initializers_are_deterministic_per_path() {
    #[derive(Debug)]
    struct KeyProbe;
    impl init::Initializer for KeyProbe {
        fn initialize(&self, shape: &Shape, dtype: DType, key: purestate::random::Key) -> purestate::Result<Tensor> {
            let [a, _] = key.words();
            Ok(Tensor::full(shape, dtype, f64::from(a)))
        }
        fn name(&self) -> &'static str {
            "KeyProbe"
        }
    }
    let mut a = StateStore::new();
    let mut b = StateStore::new();
    a.create(VariableSpec::new(KeyProbe).shape([1]).name("x").dtype(DType::Float64)).unwrap();
    let ay = a.create(VariableSpec::new(KeyProbe).shape([1]).name("y").dtype(DType::Float64)).unwrap();
    let by = b.create(VariableSpec::new(KeyProbe).shape([1]).name("y").dtype(DType::Float64)).unwrap();
    assert_eq!(a.get(&ay).unwrap().to_f64_vec(), b.get(&by).unwrap().to_f64_vec());
    let x = a.find("x").unwrap();
    assert_ne!(a.get(&x).unwrap().to_f64_vec(), a.get(&ay).unwrap().to_f64_vec());
}

/// An initializer that ignores the dtype it is asked for (as a user's Python initializer returning numpy's
/// float64 does), or the shape.
#[derive(Debug)]
struct Float64Init {
    wrong_shape: bool,
}

impl init::Initializer for Float64Init {
    fn initialize(&self, shape: &Shape, _dtype: DType, _key: purestate::random::Key) -> purestate::Result<Tensor> {
        let dims: Vec<usize> =
            if self.wrong_shape { vec![shape.dims().iter().product::<usize>() + 1] } else { shape.to_vec() };
        Tensor::from_shape_vec(
            dims.as_slice(),
            (0..dims.iter().product::<usize>()).map(|i| i as f64 + 0.5).collect::<Vec<f64>>(),
        )
    }

    fn name(&self) -> &'static str {
        "Float64Init"
    }
}

#[test]
fn an_initializer_value_of_another_dtype_is_cast_to_the_variable_dtype() {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(Float64Init { wrong_shape: false }).shape([2, 2]).name("w")).unwrap();
    assert_eq!(state.get(&w).unwrap().dtype(), DType::Float32);
    assert_eq!(state.get(&w).unwrap().to_vec::<f32>().unwrap(), vec![0.5, 1.5, 2.5, 3.5]);
    let i = state
        .create(VariableSpec::new(Float64Init { wrong_shape: false }).shape([3]).dtype(DType::Int32).name("i"))
        .unwrap();
    assert_eq!(state.get(&i).unwrap().to_vec::<i32>().unwrap(), vec![0, 1, 2], "numpy's cast truncates");
    let err = state.create(VariableSpec::new(Float64Init { wrong_shape: true }).shape([2]).name("bad")).unwrap_err();
    assert!(matches!(&err, Error::InvalidSpec { path, .. } if path == "bad"), "{err}");
    assert!(err.to_string().contains("the initializer Float64Init returned shape (3,), expected (2,)"), "{err}");
}
