//! Keras layers against Keras 3 itself (`tests/fixtures/keras_layers.json`, written by `tools/keras_layers.py`
//! on the JAX backend): variable paths, shapes, dtypes and trainable flags; forward outputs in inference and
//! training mode with Keras's weights loaded; moving statistics and seed states after three training calls;
//! the Dropout masks of a seeded layer. Then behaviour: the state a training step returns, freezing, errors.

use std::sync::OnceLock;

use purestate::grad::{self, ValueAndGrad};
use purestate::layers::{
    self, Activation, AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Embedding, Flatten,
    GlobalAveragePooling2D, Layer, LayerNormalization, MaxPooling2D, Sequential,
};
use purestate::ops::Padding;
use purestate::{losses, DType, Error, Scope, StateStore, Tensor};
use serde_json::Value;

fn fixture() -> &'static Value {
    static FIXTURE: OnceLock<Value> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keras_layers.json"))
            .expect("tests/fixtures/keras_layers.json");
        serde_json::from_str(&text).expect("valid JSON")
    })
}

fn dims(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()
}

fn pair(v: &Value) -> [usize; 2] {
    let d = dims(v);
    [d[0], d[1]]
}

/// A tensor from `{"shape", "dtype", "data"}`.
fn tensor(v: &Value) -> Tensor {
    let shape = dims(&v["shape"]);
    let data = v["data"].as_array().unwrap();
    match v["dtype"].as_str().unwrap() {
        "int32" => {
            Tensor::from_shape_vec(shape.as_slice(), data.iter().map(|x| x.as_i64().unwrap() as i32).collect()).unwrap()
        }
        _ => {
            Tensor::from_shape_vec(shape.as_slice(), data.iter().map(|x| x.as_f64().unwrap() as f32).collect()).unwrap()
        }
    }
}

fn padding(config: &Value) -> Padding {
    match config["padding"].as_str().unwrap() {
        "same" => Padding::Same,
        _ => Padding::Valid,
    }
}

/// The model a fixture entry describes, built from its layer configs.
fn model(entry: &Value) -> Sequential {
    let mut model = Sequential::new(entry["name"].as_str().unwrap());
    for layer in entry["layers"].as_array().unwrap() {
        let (class, name, c) = (layer["class"].as_str().unwrap(), layer["name"].as_str().unwrap(), &layer["config"]);
        let boxed: Box<dyn Layer> = match class {
            "Conv2D" => Box::new(
                Conv2D::new(c["filters"].as_u64().unwrap() as usize, pair(&c["kernel_size"]))
                    .strides(pair(&c["strides"]))
                    .padding(padding(c))
                    .dilation_rate(pair(&c["dilation_rate"]))
                    .use_bias(c["use_bias"].as_bool().unwrap())
                    .activation(c["activation"].as_str().unwrap())
                    .name(name),
            ),
            "BatchNormalization" => Box::new(
                BatchNormalization::new()
                    .momentum(c["momentum"].as_f64().unwrap())
                    .epsilon(c["epsilon"].as_f64().unwrap())
                    .center(c["center"].as_bool().unwrap())
                    .scale(c["scale"].as_bool().unwrap())
                    .name(name),
            ),
            "LayerNormalization" => Box::new(
                LayerNormalization::new()
                    .epsilon(c["epsilon"].as_f64().unwrap())
                    .center(c["center"].as_bool().unwrap())
                    .scale(c["scale"].as_bool().unwrap())
                    .name(name),
            ),
            "MaxPooling2D" => Box::new(
                MaxPooling2D::new(pair(&c["pool_size"])).strides(pair(&c["strides"])).padding(padding(c)).name(name),
            ),
            "AveragePooling2D" => Box::new(
                AveragePooling2D::new(pair(&c["pool_size"]))
                    .strides(pair(&c["strides"]))
                    .padding(padding(c))
                    .name(name),
            ),
            "GlobalAveragePooling2D" => Box::new(GlobalAveragePooling2D::new().name(name)),
            "Flatten" => Box::new(Flatten::new().name(name)),
            "Dropout" => {
                Box::new(Dropout::new(c["rate"].as_f64().unwrap()).seed(c["seed"].as_u64().unwrap() as u32).name(name))
            }
            "Dense" => Box::new(
                Dense::new(c["units"].as_u64().unwrap() as usize)
                    .use_bias(c["use_bias"].as_bool().unwrap())
                    .activation(c["activation"].as_str().unwrap())
                    .name(name),
            ),
            "Embedding" => Box::new(
                Embedding::new(c["input_dim"].as_u64().unwrap() as usize, c["output_dim"].as_u64().unwrap() as usize)
                    .name(name),
            ),
            other => panic!("fixture layer {other} has no counterpart"),
        };
        model.push(boxed);
    }
    model
}

/// `|a - b| <= tol * max(1, |b|)` elementwise, with the first offender in the message.
fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    for (i, (a, b)) in got.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
        assert!((a - b).abs() <= tol * b.abs().max(1.0), "{what}[{i}]: {a} vs Keras {b}");
    }
}

/// A built model with Keras's weights loaded, and its state.
fn loaded(entry: &Value) -> (Sequential, StateStore) {
    let mut state = StateStore::new();
    let mut model = model(entry);
    model.build(&mut state, &dims(&entry["input"]["shape"])).unwrap();
    for v in entry["variables"].as_array().unwrap() {
        let var = state.find(v["path"].as_str().unwrap()).unwrap();
        let values: Vec<f64> = v["value"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let value = Tensor::from_shape_vec(var.shape().dims(), values).unwrap().cast(var.dtype());
        state.assign(&var, value).unwrap();
    }
    (model, state)
}

#[test]
fn variables_have_keras_paths_shapes_dtypes_and_trainable_flags() {
    for entry in fixture()["models"].as_array().unwrap() {
        let mut state = StateStore::new();
        model(entry).build(&mut state, &dims(&entry["input"]["shape"])).unwrap();
        let ours: Vec<(String, Vec<usize>, String, bool)> = state
            .variables()
            .iter()
            .map(|v| {
                (v.path().to_string(), v.shape().dims().to_vec(), v.dtype().to_string(), state.trainable(v).unwrap())
            })
            .collect();
        let keras: Vec<(String, Vec<usize>, String, bool)> = entry["variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let path = v["path"].as_str().unwrap().to_string();
                (path, dims(&v["shape"]), v["dtype"].as_str().unwrap().to_string(), v["trainable"].as_bool().unwrap())
            })
            .collect();
        assert_eq!(ours, keras, "model {}", entry["name"]);
    }
}

#[test]
fn forward_outputs_match_keras_in_inference_and_training() {
    for entry in fixture()["models"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        let (model, mut state) = loaded(entry);
        let batches: Vec<Tensor> = entry["batches"].as_array().unwrap().iter().map(tensor).collect();
        let y = model.call(&mut Scope::new(&state), &batches[0], false).unwrap();
        assert_close(&format!("{name} inference"), &y, &tensor(&entry["inference"]), 1e-5);
        for (i, (x, want)) in batches.iter().zip(entry["training"].as_array().unwrap()).enumerate() {
            let mut scope = Scope::new(&state);
            let y = model.call(&mut scope, x, true).unwrap();
            assert_close(&format!("{name} training call {i}"), &y, &tensor(want), 1e-5);
            state = scope.finish().0;
        }
        // Moving statistics and seed states after the three training calls.
        for v in entry["after"].as_array().unwrap() {
            let var = state.find(v["path"].as_str().unwrap()).unwrap();
            let values: Vec<f64> = v["value"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            let want = Tensor::from_shape_vec(var.shape().dims(), values).unwrap();
            assert_close(&format!("{name} after: {}", var.path()), &state.get(&var).unwrap(), &want, 1e-6);
        }
    }
}

#[test]
fn a_seeded_dropout_draws_keras_masks_and_advances_its_seed_state() {
    let d = &fixture()["dropout"];
    let mut state = StateStore::new();
    let mut drop = Dropout::new(d["rate"].as_f64().unwrap()).seed(d["seed"].as_u64().unwrap() as u32);
    let x = tensor(&d["input"]);
    layers::build(&mut drop, &mut state, &x.dims()[1..]).unwrap();
    let seeds = drop.seed_generator().unwrap().variable().clone();
    for (i, call) in d["calls"].as_array().unwrap().iter().enumerate() {
        let before: Vec<u32> =
            call["state_before"]["data"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(state.get(&seeds).unwrap().to_vec::<u32>().unwrap(), before, "call {i}");
        let mut scope = Scope::new(&state);
        let y = drop.call(&mut scope, &x, true).unwrap();
        assert_close(&format!("dropout call {i}"), &y, &tensor(&call["output"]), 1e-6);
        state = scope.finish().0;
    }
}

/// A small CNN with every stateful layer: BatchNormalization and Dropout.
fn cnn(state: &mut StateStore) -> Sequential {
    let mut model = Sequential::new("cnn")
        .add(Conv2D::new(4, [3, 3]).padding(Padding::Same))
        .add(BatchNormalization::new())
        .add(Activation::new("relu"))
        .add(MaxPooling2D::new([2, 2]))
        .add(GlobalAveragePooling2D::new())
        .add(Dropout::new(0.5).seed(1))
        .add(Dense::new(3));
    model.build(state, &[4, 4, 2]).unwrap();
    model
}

fn images(seed: u32) -> Tensor {
    Tensor::from_fn([6, 4, 4, 2].as_slice(), DType::Float32, |i| {
        f64::from(((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 16) % 97) / 48.0 - 1.0
    })
}

#[test]
fn a_differentiated_cnn_step_returns_moving_statistics_and_seed_state() {
    let mut state = StateStore::new();
    let model = cnn(&mut state);
    let labels = Tensor::from([0i32, 1, 2, 0, 1, 2]);
    let step = |state: &StateStore, x: &Tensor| {
        grad::value_and_grad_aux(state, |scope| {
            let logits = model.call(scope, x, true)?;
            Ok((losses::sparse_categorical_crossentropy(&labels, &logits, true)?, logits))
        })
        .unwrap()
    };
    let first = step(&state, &images(1));
    let mean = first.state.find("cnn/batch_normalization/moving_mean").unwrap();
    assert!(first.state.get(&mean).unwrap().to_f64_vec().iter().any(|&m| m != 0.0));
    let seed = state.find("seed_generator/seed_generator_state").unwrap();
    assert_eq!(first.state.get(&seed).unwrap().to_vec::<u32>().unwrap(), [1, 1]);
    assert!(first.grads.contains(&state.find("cnn/conv2d/kernel").unwrap()));
    assert!(!first.grads.contains(&mean), "moving statistics are not differentiated");
    // The same snapshot gives the same bits; the returned state draws another mask.
    let again = step(&state, &images(1));
    assert_eq!(again.state.fingerprint(), first.state.fingerprint());
    assert!(again.aux.bit_eq(&first.aux));
    let second = step(&first.state, &images(1));
    assert!(!second.aux.bit_eq(&first.aux), "the advanced seed draws another dropout mask");
}

#[test]
fn a_frozen_batch_normalization_runs_in_inference_mode() {
    let mut state = StateStore::new();
    let mut bn = BatchNormalization::new();
    layers::build(&mut bn, &mut state, &[2]).unwrap();
    layers::set_trainable(&mut state, &bn, false).unwrap();
    let x = Tensor::from([[1.0f32, 10.0], [3.0, 30.0]]);
    let mut scope = Scope::new(&state);
    let y = bn.call(&mut scope, &x, true).unwrap();
    assert!(scope.assigned().is_empty(), "a frozen layer does not update its statistics");
    let inference = bn.call(&mut Scope::new(&state), &x, false).unwrap();
    assert!(y.bit_eq(&inference));
}

#[test]
fn bad_input_is_a_typed_error_naming_the_layer_and_shapes() {
    let mut state = StateStore::new();
    let model = cnn(&mut state);
    let fingerprint = state.fingerprint();
    let mut scope = Scope::new(&state);
    // Wrong rank, wrong channel count.
    let err = model.call(&mut scope, &Tensor::zeros([4, 4, 2].as_slice(), DType::Float32), false).unwrap_err();
    assert!(matches!(&err, Error::LayerInput { layer, .. } if layer == "cnn/conv2d"), "{err}");
    assert_eq!(
        err.to_string(),
        "`cnn/conv2d`: expected rank 4 (a batch of rank-3 examples), got input shape (4, 4, 2)"
    );
    let err = model.call(&mut scope, &Tensor::zeros([1, 4, 4, 3].as_slice(), DType::Float32), false).unwrap_err();
    assert_eq!(err.to_string(), "`cnn/conv2d`: expected 2 channels on the last axis, got input shape (1, 4, 4, 3)");
    assert!(scope.assigned().is_empty());
    // A state that lacks the layer's variables.
    let err = model.call(&mut Scope::new(&StateStore::new()), &images(0), false).unwrap_err();
    assert!(matches!(&err, Error::ForeignVariable { path } if path == "cnn/conv2d/kernel"), "{err}");
    // A dropout rate outside [0, 1); a pool larger than its input: the state is unchanged.
    let mut other = state.clone();
    let err = layers::build(&mut Dropout::new(1.0), &mut other, &[3]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { op: "Dropout", arg: "rate", .. }), "{err}");
    let err =
        Sequential::new("m").add(Dense::new(2)).add(MaxPooling2D::new([3, 3])).build(&mut other, &[4]).unwrap_err();
    assert!(matches!(&err, Error::LayerInput { layer, .. } if layer == "m/max_pooling2d"), "{err}");
    let err = layers::build(&mut MaxPooling2D::new([5, 5]), &mut other, &[4, 4, 1]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`max_pooling2d`: the window 5x5 (dilation 1x1) is larger than the input, got input shape (4, 4, 1)"
    );
    assert_eq!(other.fingerprint(), fingerprint);
    assert_eq!(other.len(), state.len());
    // An id outside the vocabulary.
    let mut emb = Embedding::new(5, 2);
    layers::build(&mut emb, &mut other, &[2]).unwrap();
    let err = emb.call(&mut Scope::new(&other), &Tensor::from([[1i32, 5]]), false).unwrap_err();
    assert!(matches!(&err, Error::LayerInput { layer, .. } if layer == "embedding"), "{err}");
    // Assigning a differentiated variable through a layer call is impossible: BN's statistics are not
    // trainable, so a step that differentiates every trainable variable is fine.
    ValueAndGrad::new().call(&state, |s| model.call(s, &images(0), true)?.sum(None, false)).unwrap();
}

/// Commits `steps` CNN steps (Adam, batches from [`images`]) through `trainer`, from its head's step count on;
/// the step number is the record.
fn train_cnn(trainer: &mut purestate::Trainer<u32>, model: &Sequential, opt: &purestate::optim::Adam, to: u32) {
    use purestate::optim::Optimizer;
    let labels = Tensor::from([0i32, 1, 2, 0, 1, 2]);
    let from = trainer.record(trainer.head()).unwrap().map_or(0, |&s| s + 1);
    for step in from..to {
        let out = grad::value_and_grad_aux(trainer.state().clone(), |scope| {
            let logits = model.call(scope, &images(step), true)?;
            Ok((losses::sparse_categorical_crossentropy(&labels, &logits, true)?, ()))
        })
        .unwrap();
        let next = opt.apply(out.state, &out.grads).unwrap();
        trainer.commit_with(next, step).unwrap();
    }
}

#[test]
fn a_cnn_run_resumed_from_its_directory_ends_bit_identical_and_replays() {
    use purestate::optim::{Adam, Optimizer};
    use purestate::{RunOptions, Trainer};
    let fresh = || {
        let mut state = StateStore::new();
        let model = cnn(&mut state);
        let mut opt = Adam::new(1e-2);
        opt.build(&mut state, &model.trainable_weights()).unwrap();
        (state, model, opt)
    };
    // Uninterrupted, in memory.
    let (state, model, opt) = fresh();
    let mut straight: Trainer<u32> = Trainer::new(state);
    train_cnn(&mut straight, &model, &opt, 8);
    // Journaled: 5 steps, the process "ends", a new one opens the run and trains on to 8.
    let dir = tempfile::tempdir().unwrap();
    let (state, model, opt) = fresh();
    let mut first: Trainer<u32> = Trainer::create_run(dir.path(), state.clone(), RunOptions::default()).unwrap();
    train_cnn(&mut first, &model, &opt, 5);
    first.flush().unwrap();
    drop(first);
    let mut resumed: Trainer<u32> = Trainer::open_run(dir.path(), RunOptions::default()).unwrap();
    resumed.rebind(&state).unwrap();
    assert_eq!(resumed.head(), 5);
    train_cnn(&mut resumed, &model, &opt, 8);
    assert_eq!(resumed.fingerprint(8).unwrap(), straight.fingerprint(8).unwrap());
    // Every version holds the moving statistics and the seed state, and they moved.
    let seed = resumed.state().find("seed_generator/seed_generator_state").unwrap();
    assert_eq!(resumed.state().get(&seed).unwrap().to_vec::<u32>().unwrap(), [1, 8]);
    // Replay from version 0 checks every version's fingerprint.
    let labels = Tensor::from([0i32, 1, 2, 0, 1, 2]);
    let report = resumed
        .replay(0, 8, |s, &step: &u32| {
            let out = grad::value_and_grad_aux(s, |scope| {
                let logits = model.call(scope, &images(step), true)?;
                Ok((losses::sparse_categorical_crossentropy(&labels, &logits, true)?, ()))
            })?;
            opt.apply(out.state, &out.grads)
        })
        .unwrap();
    assert!(report.is_bit_identical(), "{report}");
}

/// `sum(batch_norm_train(x, gamma, beta) * w)` for fixed weights `w`.
fn bn_loss(x: &Tensor, gamma: &Tensor, beta: &Tensor, w: &Tensor) -> purestate::Result<Tensor> {
    let (y, _, _) = purestate::ops::batch_norm_train(x, Some(gamma), Some(beta), 1e-3)?;
    y.mul(w)?.sum(purestate::ops::Axes::All, false)
}

fn f64_tensor(dims: &[usize], seed: u64) -> Tensor {
    Tensor::from_fn(dims, DType::Float64, |i| {
        let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        (h >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
    })
}

#[test]
fn fused_batch_norm_gradients_pass_finite_differences_and_match_the_composed_ops() {
    let (x, gamma, beta, w) =
        (f64_tensor(&[5, 3, 4], 1), f64_tensor(&[4], 2), f64_tensor(&[4], 3), f64_tensor(&[5, 3, 4], 4));
    let out = ValueAndGrad::new()
        .call(StateStore::new(), |s| {
            let (x, g, b) = (s.watch(&x)?, s.watch(&gamma)?, s.watch(&beta)?);
            bn_loss(&x, &g, &b, &w)
        })
        .unwrap();
    let h = 1e-6;
    for (k, input) in [&x, &gamma, &beta].into_iter().enumerate() {
        let values = input.to_f64_vec();
        let analytic = out.inputs[k].to_f64_vec();
        for i in 0..values.len() {
            let shifted = |d: f64| {
                let mut v = values.clone();
                v[i] += d;
                let t = Tensor::from_shape_vec(input.dims(), v).unwrap();
                let mut args = [x.clone(), gamma.clone(), beta.clone()];
                args[k] = t;
                bn_loss(&args[0], &args[1], &args[2], &w).unwrap().to_f64().unwrap()
            };
            let numeric = (shifted(h) - shifted(-h)) / (2.0 * h);
            assert!(
                (analytic[i] - numeric).abs() <= 1e-5 * (1.0 + numeric.abs()),
                "input {k}[{i}]: {} vs {numeric}",
                analytic[i]
            );
        }
    }
    // The composed form (moments, then Keras's formula) gives the same output.
    let mean = x.mean(purestate::ops::Axes::These(vec![0, 1]), false).unwrap();
    let var = x.var(purestate::ops::Axes::These(vec![0, 1]), false).unwrap();
    let inv = var.add(1e-3).unwrap().rsqrt().unwrap().mul(&gamma).unwrap();
    let composed = x.mul(&inv).unwrap().add(mean.neg().unwrap().mul(&inv).unwrap().add(&beta).unwrap()).unwrap();
    let (fused, m, v) = purestate::ops::batch_norm_train(&x, Some(&gamma), Some(&beta), 1e-3).unwrap();
    assert_close("fused vs composed", &fused, &composed, 1e-12);
    assert_close("mean", &m, &mean, 1e-14);
    assert_close("variance", &v, &var, 1e-14);
    // Errors: a gamma of the wrong shape, an integer input.
    let err = purestate::ops::batch_norm_train(&x, Some(&beta.reshape(&[2, 2]).unwrap()), None, 1e-3).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    assert!(purestate::ops::batch_norm_train(&Tensor::from([[1i32, 2]]), None, None, 1e-3).is_err());
}

/// `sum(norm(x, gamma, beta) * w)` and its gradients with respect to `x`, `gamma` and `beta` (float32, `dims`
/// with the features last) have the same bits at 2 and 7 threads as at 1.
fn norm_bits_at_1_2_and_7_threads(
    dims: &[usize],
    norm: impl Fn(&Tensor, &Tensor, &Tensor) -> purestate::Result<Tensor> + Sync,
) {
    let c = dims[dims.len() - 1];
    let x = Tensor::from_fn(dims, DType::Float32, |i| ((i * 7919) % 1013) as f64 / 500.0 - 1.0);
    let gamma = Tensor::from_fn([c].as_slice(), DType::Float32, |i| 0.5 + i as f64 / c as f64);
    let beta = Tensor::from_fn([c].as_slice(), DType::Float32, |i| i as f64 / (2 * c) as f64 - 0.25);
    let w = Tensor::from_fn(dims, DType::Float32, |i| ((i * 31) % 17) as f64 / 8.0 - 1.0);
    let run = || {
        ValueAndGrad::new()
            .call(StateStore::new(), |s| {
                let (x, g, b) = (s.watch(&x)?, s.watch(&gamma)?, s.watch(&beta)?);
                norm(&x, &g, &b)?.mul(&w)?.sum(purestate::ops::Axes::All, false)
            })
            .unwrap()
    };
    let base = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
    for n in [2, 7] {
        let out = rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(run);
        assert!(out.loss.bit_eq(&base.loss), "{n} threads: loss");
        for (a, b) in out.inputs.iter().zip(&base.inputs) {
            assert!(a.bit_eq(b), "{n} threads: a gradient differs");
        }
    }
}

#[test]
fn fused_batch_norm_is_bit_identical_at_1_2_and_7_threads() {
    norm_bits_at_1_2_and_7_threads(&[128, 8, 8, 64], |x, g, b| {
        Ok(purestate::ops::batch_norm_train(x, Some(g), Some(b), 1e-3)?.0)
    });
}

/// Layer normalization composed from operators, Keras's formula (`moments` over the last axis, then
/// `x * inv + (-mean * inv + beta)` with `inv = gamma * rsqrt(variance + epsilon)`).
fn composed_layer_norm(x: &Tensor, gamma: Option<&Tensor>, beta: Option<&Tensor>) -> purestate::Result<Tensor> {
    let last = purestate::ops::Axes::These(vec![-1]);
    let mean = x.mean(last.clone(), true)?;
    let variance = x.sub(&mean)?.square()?.mean(last, true)?;
    let mut inv = variance.add(1e-3)?.rsqrt()?;
    if let Some(g) = gamma {
        inv = inv.mul(g)?;
    }
    let mut res = mean.neg()?.mul(&inv)?;
    if let Some(b) = beta {
        res = res.add(b)?;
    }
    x.mul(&inv)?.add(&res)
}

#[test]
fn fused_layer_norm_has_the_composed_forward_bits_and_its_gradients() {
    use purestate::ops::layer_norm;
    for dtype in [DType::Float32, DType::Float64] {
        let (x, gamma, beta) = (
            f64_tensor(&[3, 5, 7], 11).cast(dtype),
            f64_tensor(&[7], 12).cast(dtype),
            f64_tensor(&[7], 13).cast(dtype),
        );
        for (g, b) in [(Some(&gamma), Some(&beta)), (None, Some(&beta)), (Some(&gamma), None), (None, None)] {
            let fused = layer_norm(&x, g, b, 1e-3).unwrap();
            let composed = composed_layer_norm(&x, g, b).unwrap();
            assert!(fused.bit_eq(&composed), "{dtype:?}, gamma {} beta {}: forward bits", g.is_some(), b.is_some());
        }
        // The closed-form backward against the tape's gradient of the composed form.
        let w = f64_tensor(&[3, 5, 7], 14).cast(dtype);
        let grads = |fused: bool| {
            ValueAndGrad::new()
                .call(StateStore::new(), |s| {
                    let (x, g, b) = (s.watch(&x)?, s.watch(&gamma)?, s.watch(&beta)?);
                    let y = if fused {
                        layer_norm(&x, Some(&g), Some(&b), 1e-3)?
                    } else {
                        composed_layer_norm(&x, Some(&g), Some(&b))?
                    };
                    y.mul(&w)?.sum(purestate::ops::Axes::All, false)
                })
                .unwrap()
                .inputs
        };
        let tol = if dtype == DType::Float32 { 2e-5 } else { 1e-12 };
        for (k, (f, c)) in grads(true).iter().zip(grads(false)).enumerate() {
            assert_close(&format!("{dtype:?} gradient of input {k}"), f, &c, tol);
        }
    }
    // Finite differences in float64, also without gamma (only x and beta traced).
    crate::fd::check(
        "layer_norm",
        &|t| Ok(vec![purestate::ops::layer_norm(&t[0], Some(&t[1]), Some(&t[2]), 1e-3)?]),
        &[
            crate::fd::tensor(1, &[4, 6], -2.0, 2.0),
            crate::fd::tensor(2, &[6], 0.5, 1.5),
            crate::fd::tensor(3, &[6], -1.0, 1.0),
        ],
    );
    crate::fd::check(
        "layer_norm without gamma",
        &|t| Ok(vec![purestate::ops::layer_norm(&t[0], None, Some(&t[1]), 1e-3)?]),
        &[crate::fd::tensor(4, &[2, 3, 5], -2.0, 2.0), crate::fd::tensor(5, &[5], -1.0, 1.0)],
    );
    // Errors: gamma of the wrong shape or dtype, an integer input, a 0-d input, no feature.
    let x = f64_tensor(&[2, 4], 1);
    let err = layer_norm(&x, Some(&f64_tensor(&[3], 2)), None, 1e-3).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let err = layer_norm(&x, None, Some(&f64_tensor(&[4], 2).cast(DType::Float32)), 1e-3).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let err = layer_norm(&Tensor::from([[1i32, 2]]), None, None, 1e-3).unwrap_err();
    assert!(matches!(err, Error::UnsupportedDType { .. }), "{err}");
    assert!(matches!(layer_norm(&Tensor::scalar(1.0f32), None, None, 1e-3), Err(Error::InvalidShape { .. })));
    let empty = Tensor::zeros([3, 0].as_slice(), DType::Float32);
    assert!(matches!(layer_norm(&empty, None, None, 1e-3), Err(Error::InvalidShape { .. })));
}

#[test]
fn fused_layer_norm_is_bit_identical_at_1_2_and_7_threads() {
    // 2048 rows of 128: the lm's activations, split over the pool.
    norm_bits_at_1_2_and_7_threads(&[32, 64, 128], |x, g, b| purestate::ops::layer_norm(x, Some(g), Some(b), 1e-3));
}
