//! `MultiHeadAttention` against Keras 3.15.1 on JAX (`tests/fixtures/keras_attention.json`, written by
//! `tools/keras_attention.py`): variable paths, shapes, dtypes and order; outputs with Keras's weights loaded,
//! without a mask, causal, with a padding mask and both (within `1e-5` relative); dropout in training; the
//! gradient of a loss through the layer against finite differences; typed input errors.

use purestate::grad::{self, ValueAndGrad};
use purestate::layers::{self, Layer, MultiHeadAttention};
use purestate::ops::Axes;
use purestate::{DType, Error, Result, Scope, StateStore, Tensor};
use serde_json::Value;

use crate::fd;
use crate::jax_ops_misc::tensor;

fn fixture() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keras_attention.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn dims(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()
}

/// The layer of a case, from its Keras config.
fn layer(config: &Value) -> MultiHeadAttention {
    let int = |k: &str| config[k].as_u64().map(|v| v as usize);
    let mut mha = MultiHeadAttention::new(int("num_heads").unwrap(), int("key_dim").unwrap())
        .name(config["name"].as_str().unwrap());
    if let Some(v) = int("value_dim") {
        mha = mha.value_dim(v);
    }
    if let Some(d) = config["dropout"].as_f64() {
        mha = mha.dropout(d);
    }
    if let Some(b) = config["use_bias"].as_bool() {
        mha = mha.use_bias(b);
    }
    if let Some(o) = int("output_shape") {
        mha = mha.output_shape(&[o]);
    }
    if let Some(s) = config["seed"].as_u64() {
        mha = mha.seed(s as u32);
    }
    mha
}

/// A case's layer built for its inputs, with Keras's weights loaded, and the inputs.
fn loaded(case: &Value) -> (MultiHeadAttention, StateStore, Tensor, Tensor, Option<Tensor>) {
    let inputs = &case["inputs"];
    let query = tensor(&inputs["query"]);
    let value = if inputs["value"].is_null() { query.clone() } else { tensor(&inputs["value"]) };
    let key = (!inputs["key"].is_null()).then(|| tensor(&inputs["key"]));
    let mut state = StateStore::new();
    let mut mha = layer(&case["config"]);
    let k_shape = key.as_ref().map(|k| k.dims()[1..].to_vec());
    mha.build_attention(&mut state, None, &query.dims()[1..], &value.dims()[1..], k_shape.as_deref()).unwrap();
    for v in case["variables"].as_array().unwrap() {
        let var = state.find(v["path"].as_str().unwrap()).unwrap();
        state.assign(&var, tensor(&v["value"]).cast(var.dtype())).unwrap();
    }
    (mha, state, query, value, key)
}

#[test]
fn variables_have_keras_paths_shapes_and_order() {
    for case in fixture()["cases"].as_array().unwrap() {
        let (mha, state, ..) = loaded(case);
        let want = case["variables"].as_array().unwrap();
        let got = mha.variables();
        assert_eq!(got.len(), want.len(), "{}", case["name"]);
        for (v, w) in got.iter().zip(want) {
            assert_eq!(v.path(), w["path"].as_str().unwrap());
            assert_eq!(v.shape().dims(), dims(&w["shape"]).as_slice(), "{}", v.path());
            assert_eq!(v.dtype().name(), w["dtype"].as_str().unwrap(), "{}", v.path());
            assert_eq!(state.trainable(v).unwrap(), w["trainable"].as_bool().unwrap(), "{}", v.path());
        }
        let trainable = want.iter().filter(|w| w["trainable"].as_bool().unwrap()).count();
        assert_eq!(mha.trainable_weights().len(), trainable);
    }
}

#[test]
fn outputs_match_keras_with_and_without_masks() {
    let mut checked = 0;
    for case in fixture()["cases"].as_array().unwrap() {
        let (mha, state, query, value, key) = loaded(case);
        for call in case["calls"].as_array().unwrap() {
            let what = format!("{}/{}", case["name"].as_str().unwrap(), call["name"].as_str().unwrap());
            let mask = (!call["attention_mask"].is_null()).then(|| tensor(&call["attention_mask"]));
            let causal = call["use_causal_mask"].as_bool().unwrap();
            let mut scope = Scope::new(&state);
            let y = mha.call_attention(&mut scope, &query, &value, key.as_ref(), mask.as_ref(), causal, false).unwrap();
            let want = tensor(&call["output"]);
            assert_eq!(y.dims(), want.dims(), "{what}");
            for (i, (a, b)) in y.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1e-1), "{what}[{i}]: {a} vs Keras {b}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 12);
}

#[test]
fn self_attention_through_the_layer_trait_is_the_unmasked_call() {
    let fixture = fixture();
    let case = &fixture["cases"][0];
    let (mha, state, query, ..) = loaded(case);
    let y = mha.call(&mut Scope::new(&state), &query, false).unwrap();
    let want = tensor(&case["calls"][0]["output"]);
    for (a, b) in y.to_f64_vec().iter().zip(want.to_f64_vec()) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1e-1));
    }
}

#[test]
fn dropout_applies_in_training_only_and_advances_its_seed() {
    let fixture = fixture();
    let case = &fixture["cases"][1]; // dropout 0.3, seed 5
    let (mha, state, query, value, key) = loaded(case);
    let seeds = mha.seed_generator().unwrap().variable().clone();
    assert_eq!(seeds.path(), "cross/seed_generator/seed_generator_state");
    let mut scope = Scope::new(&state);
    let inference = mha.call_attention(&mut scope, &query, &value, key.as_ref(), None, false, false).unwrap();
    assert!(scope.assigned().is_empty(), "inference draws no mask");
    let a = mha.call_attention(&mut scope, &query, &value, key.as_ref(), None, false, true).unwrap();
    let b = mha.call_attention(&mut scope, &query, &value, key.as_ref(), None, false, true).unwrap();
    assert!(!a.bit_eq(&inference) && !a.bit_eq(&b), "each training call draws a new mask");
    let (next, _) = scope.finish();
    assert_eq!(next.get(&seeds).unwrap().to_vec::<u32>().unwrap(), [5, 2], "two draws advanced the counter twice");
    // The same state replays the same masks.
    let again = mha.call_attention(&mut Scope::new(&state), &query, &value, key.as_ref(), None, false, true).unwrap();
    assert!(again.bit_eq(&a));
}

/// A float64 self-attention layer (2 heads of 3, dropout off) on a (2, 4, 5) batch, with a padding and causal
/// mask, and non-zero biases.
fn float64_case() -> (MultiHeadAttention, StateStore, Tensor, Tensor) {
    let mut state = StateStore::new().with_floatx(DType::Float64).unwrap();
    let mut mha = MultiHeadAttention::new(2, 3).value_dim(2).output_shape(&[3]);
    layers::build(&mut mha, &mut state, &[4, 5]).unwrap();
    for (k, var) in mha.variables().iter().enumerate() {
        let value = fd::tensor(10 + k as u64, var.shape().dims(), -0.8, 0.8);
        state.assign(var, value).unwrap();
    }
    let x = fd::tensor(3, &[2, 4, 5], -1.5, 1.5);
    let mask = Tensor::from_shape_vec([2, 1, 4], vec![true, true, true, true, true, true, false, true]).unwrap();
    (mha, state, x, mask)
}

#[test]
fn gradient_through_attention_matches_finite_differences() {
    let (mha, state, x, mask) = float64_case();
    assert_eq!(state.get(&mha.variables()[0]).unwrap().dtype(), DType::Float64);
    let w = fd::tensor(50, &[2, 4, 3], -1.0, 1.0);
    let loss = |state: &StateStore, x: &Tensor| -> Result<Tensor> {
        let mut scope = Scope::new(state);
        let y = mha.call_attention(&mut scope, x, x, None, Some(&mask), true, false)?;
        y.mul(&w)?.sum(Axes::All, false)
    };
    // The inputs' gradient.
    fd::check(
        "mha input",
        &|xs| {
            let mut scope = Scope::new(&state);
            Ok(vec![mha.call_attention(&mut scope, &xs[0], &xs[0], None, Some(&mask), true, false)?])
        },
        std::slice::from_ref(&x),
    );
    // Every variable's gradient.
    let (_, grads) = grad::value_and_grad(&state, |scope| {
        let y = mha.call_attention(scope, &x, &x, None, Some(&mask), true, false)?;
        y.mul(&w)?.sum(Axes::All, false)
    })
    .unwrap();
    for var in mha.trainable_weights() {
        let analytic = grads.get(&var).unwrap().to_vec::<f64>().unwrap();
        let base = state.get(&var).unwrap().to_vec::<f64>().unwrap();
        for i in 0..base.len() {
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                let mut s = state.clone();
                s.assign(&var, Tensor::from_shape_vec(var.shape().dims(), v).unwrap()).unwrap();
                loss(&s, &x).unwrap().to_f64().unwrap()
            };
            let numeric = (at(fd::H) - at(-fd::H)) / (2.0 * fd::H);
            assert!(
                (analytic[i] - numeric).abs() <= fd::TOL * (1.0 + numeric.abs()),
                "{}[{i}]: analytic {} numeric {numeric}",
                var.path(),
                analytic[i]
            );
        }
    }
    // The layer trait's call is differentiable too (no mask).
    let out = ValueAndGrad::new().call(&state, |scope| mha.call(scope, &x, false)?.sum(Axes::All, false)).unwrap();
    assert_eq!(out.grads.len(), mha.trainable_weights().len());
}

#[test]
fn bad_inputs_are_typed_errors_naming_the_layer() {
    let mut state = StateStore::new();
    let mut mha = MultiHeadAttention::new(2, 4).name("attn");
    layers::build(&mut mha, &mut state, &[3, 6]).unwrap();
    let x = Tensor::ones([2, 3, 6], DType::Float32);
    let mut scope = Scope::new(&state);
    let layer_input = |e: Error| match e {
        Error::LayerInput { layer, got, .. } => (layer, got.dims().to_vec()),
        other => panic!("expected LayerInput, got {other:?}"),
    };
    // A mask that does not broadcast to (batch, T, S).
    let mask = Tensor::ones([2, 3, 4], DType::Bool);
    let err = mha.call_attention(&mut scope, &x, &x, None, Some(&mask), false, false).unwrap_err();
    assert_eq!(layer_input(err), ("attn".to_string(), vec![2, 3, 4]));
    let err =
        mha.call_attention(&mut scope, &x, &x, None, Some(&Tensor::ones([1, 1, 1, 3], DType::Bool)), false, false);
    assert!(matches!(err, Err(Error::LayerInput { .. })));
    // Broadcastable masks are taken.
    for shape in [vec![3, 3], vec![1, 3], vec![2, 1, 3], vec![3]] {
        let m = Tensor::ones(shape.as_slice(), DType::Bool);
        assert!(mha.call_attention(&mut scope, &x, &x, None, Some(&m), true, false).is_ok(), "{shape:?}");
    }
    // A last dimension other than the built one, and the wrong rank.
    let err = mha.call(&mut scope, &Tensor::ones([2, 3, 5], DType::Float32), false).unwrap_err();
    assert_eq!(layer_input(err), ("attn".to_string(), vec![2, 3, 5]));
    assert!(matches!(
        mha.call(&mut scope, &Tensor::ones([3, 6], DType::Float32), false),
        Err(Error::LayerInput { .. })
    ));
    // Key and value of different lengths.
    let (v, k) = (Tensor::ones([2, 4, 6], DType::Float32), Tensor::ones([2, 5, 6], DType::Float32));
    assert!(matches!(
        mha.call_attention(&mut scope, &x, &v, Some(&k), None, false, false),
        Err(Error::LayerInput { .. })
    ));
    // Options outside their domain, refused at build with the state unchanged.
    for mut bad in
        [MultiHeadAttention::new(0, 4), MultiHeadAttention::new(2, 0), MultiHeadAttention::new(2, 4).value_dim(0)]
    {
        let before = state.variables().len();
        let err = layers::build(&mut bad, &mut state, &[3, 6]).unwrap_err();
        assert!(matches!(err, Error::LayerInput { ref layer, .. } if layer == "multi_head_attention"), "{err}");
        assert_eq!(state.variables().len(), before);
    }
    assert!(layers::build(&mut MultiHeadAttention::new(2, 4).dropout(1.0), &mut state, &[3, 6]).is_err());
    assert!(layers::build(&mut MultiHeadAttention::new(2, 4), &mut state, &[6]).is_err(), "examples are (T, features)");
    // Unbuilt.
    let fresh = MultiHeadAttention::new(1, 2);
    assert!(matches!(fresh.call(&mut scope, &x, false), Err(Error::InvalidArgument { .. })));
}
