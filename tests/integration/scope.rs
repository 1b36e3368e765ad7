//! Scope: overriding values, read-your-writes, autocast on read, losses, an untouched base store.

use purestate::{init, DType, Error, Scope, StateStore, Tensor, VariableSpec};

#[test]
fn overrides_are_read_but_not_written_back() {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Ones).shape([2]).name("w")).unwrap();
    let scope = Scope::with_values(&state, [(w.clone(), Tensor::from([7.0f64, 8.0]))]).unwrap();
    let read = scope.get(&w).unwrap();
    assert_eq!(read.dtype(), DType::Float32, "overrides are cast to the variable's dtype");
    assert_eq!(read.to_vec::<f32>().unwrap(), [7.0, 8.0]);
    let (next, _) = scope.finish();
    assert_eq!(next.get(&w).unwrap().to_vec::<f32>().unwrap(), [1.0, 1.0]);
}

#[test]
fn override_with_wrong_shape_is_an_error() {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Ones).shape([2]).name("w")).unwrap();
    let err = Scope::with_values(&state, [(w, Tensor::from([1.0f32]))]).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }));
}

#[test]
fn assign_add_starts_from_the_override() {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Ones).shape([2]).name("w")).unwrap();
    let mut scope = Scope::with_values(&state, [(w.clone(), Tensor::from([10.0f32, 20.0]))]).unwrap();
    scope.assign_add(&w, Tensor::from(1.0f32)).unwrap();
    assert_eq!(scope.get(&w).unwrap().to_vec::<f32>().unwrap(), [11.0, 21.0]);
    let (next, _) = scope.finish();
    assert_eq!(next.get(&w).unwrap().to_vec::<f32>().unwrap(), [11.0, 21.0]);
    assert_eq!(state.get(&w).unwrap().to_vec::<f32>().unwrap(), [1.0, 1.0]);
}

#[test]
fn autocast_casts_only_float_variables_that_allow_it() {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Ones).shape([1]).name("w")).unwrap();
    let pinned = state.create(VariableSpec::new(init::Ones).shape([1]).name("p").autocast(false)).unwrap();
    let count = state.create(VariableSpec::new(Tensor::from([3i32])).name("c")).unwrap();
    let scope = Scope::new(&state).with_autocast(DType::Bfloat16).unwrap();
    assert_eq!(scope.get(&w).unwrap().dtype(), DType::Bfloat16);
    assert_eq!(scope.get(&pinned).unwrap().dtype(), DType::Float32);
    assert_eq!(scope.get(&count).unwrap().dtype(), DType::Int32);
    assert_eq!(scope.state().get(&w).unwrap().dtype(), DType::Float32, "storage keeps the variable dtype");
}

#[test]
fn losses_are_collected_in_order() {
    let state = StateStore::new();
    let mut scope = Scope::new(&state);
    scope.add_loss(Tensor::from(1.0f32));
    scope.add_loss(Tensor::from(2.0f32));
    assert_eq!(scope.losses().len(), 2);
    let (_, losses) = scope.finish();
    assert_eq!(losses.iter().map(|l| l.to_f64_vec()[0]).collect::<Vec<_>>(), [1.0, 2.0]);
}

#[test]
fn foreign_variables_are_refused() {
    let mut other = StateStore::new();
    let w = other.create(VariableSpec::new(init::Ones).shape([1]).name("w")).unwrap();
    let state = StateStore::new();
    let scope = Scope::new(&state);
    assert!(matches!(scope.get(&w), Err(Error::ForeignVariable { .. })));
    assert!(matches!(Scope::with_values(&state, [(w, Tensor::from([1.0f32]))]), Err(Error::ForeignVariable { .. })));
}

#[test]
fn an_autocast_scope_to_a_non_float_dtype_is_an_error() {
    let state = StateStore::new();
    for dtype in [DType::Int32, DType::Bool, DType::Uint8] {
        let err = Scope::new(&state).with_autocast(dtype).unwrap_err();
        assert!(matches!(err, Error::UnsupportedDType { op: "autocast", dtype: d } if d == dtype), "{err}");
    }
    let scope = Scope::new(&state).with_autocast(DType::Float16).unwrap();
    assert_eq!(scope.autocast(), Some(DType::Float16));
    let err = purestate::grad::ValueAndGrad::new()
        .autocast(DType::Int32)
        .call(&state, |_| Ok(Tensor::from(0.0f32)))
        .unwrap_err();
    assert!(matches!(err, Error::UnsupportedDType { op: "autocast", .. }), "{err}");
}
