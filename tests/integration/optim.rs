//! Optimizers against real Keras 3: tests/fixtures/keras_optim.json was written by tools/keras_optim.py (Keras
//! 3 on JAX), which runs each configuration for six steps of fixed gradients (a zero gradient at step 3, a
//! large one at step 4) and records every parameter and optimizer variable after each step. Keras computes in
//! float32 (bias corrections like `1 - beta_2**t` included), so agreement is to 2e-5 relative.
//!
//! The configurations with the base optimizer's own state (use_ema, ema_overwrite_frequency,
//! gradient_accumulation_steps) and the LossScaleOptimizer ones (their own gradients, with an infinity at
//! step 3 and a NaN at step 5, which JSON holds as strings) replay the same way.

use std::collections::HashMap;

use purestate::grad::Grads;
use purestate::optim::{
    Adagrad, Adam, AdamW, CosineDecay, ExponentialDecay, LossScaleOptimizer, Optimizer, PiecewiseConstantDecay,
    RmsProp, Sgd,
};
use purestate::{init, Error, StateStore, Tensor, Variable, VariableSpec};
use serde_json::Value;

const FIXTURE: &str = include_str!("../fixtures/keras_optim.json");

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        Value::String(s) if s == "inf" => vec![f32::INFINITY],
        Value::String(s) if s == "-inf" => vec![f32::NEG_INFINITY],
        Value::String(s) if s == "nan" => vec![f32::NAN],
        other => panic!("not a number array: {other}"),
    }
}

/// Keras's path without the instance suffix of the optimizer's name scope: Keras names the second SGD of a
/// session `sgd_1`, ours are per store (`adam_w_2/x` is `adam_w/x`, `loss_scale_optimizer_1/x` is
/// `loss_scale_optimizer/x`).
fn without_instance_suffix(keras: &str) -> String {
    let (scope, rest) = keras.split_once('/').unwrap();
    let scope = match scope.rsplit_once('_') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => scope,
    };
    format!("{scope}/{rest}")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn optimizer_for(config: &Value) -> Box<dyn Optimizer> {
    let inner = inner_optimizer_for(config);
    match config.get("loss_scale").and_then(Value::as_object) {
        Some(ls) => {
            let mut opt = LossScaleOptimizer::new(inner);
            if let Some(v) = ls.get("initial_scale") {
                opt = opt.initial_scale(f(v));
            }
            if let Some(v) = ls.get("dynamic_growth_steps") {
                opt = opt.dynamic_growth_steps(v.as_u64().unwrap() as u32);
            }
            Box::new(opt)
        }
        None => inner,
    }
}

fn inner_optimizer_for(config: &Value) -> Box<dyn Optimizer> {
    let kw = &config["kwargs"];
    let lr = kw.get("learning_rate").map(f);
    macro_rules! with_common {
        ($opt:expr) => {{
            let mut opt = $opt;
            if let Some(v) = kw.get("weight_decay") {
                opt = opt.weight_decay(f(v));
            }
            if let Some(v) = kw.get("clipnorm") {
                opt = opt.clipnorm(f(v));
            }
            if let Some(v) = kw.get("clipvalue") {
                opt = opt.clipvalue(f(v));
            }
            if let Some(v) = kw.get("global_clipnorm") {
                opt = opt.global_clipnorm(f(v));
            }
            if kw.get("use_ema").and_then(Value::as_bool) == Some(true) {
                // Keras's default ema_momentum is 0.99.
                opt = opt.use_ema(kw.get("ema_momentum").map(f).unwrap_or(0.99));
            }
            if let Some(v) = kw.get("ema_overwrite_frequency").and_then(Value::as_u64) {
                opt = opt.ema_overwrite_frequency(v as u32);
            }
            if let Some(v) = kw.get("gradient_accumulation_steps").and_then(Value::as_u64) {
                opt = opt.gradient_accumulation_steps(v as u32);
            }
            if let Some(s) = config["schedule"].as_object() {
                let c = &s["config"];
                opt = match s["class"].as_str().unwrap() {
                    "ExponentialDecay" => opt.learning_rate(
                        ExponentialDecay::new(
                            f(&c["initial_learning_rate"]),
                            c["decay_steps"].as_u64().unwrap(),
                            f(&c["decay_rate"]),
                        )
                        .unwrap()
                        .staircase(c.get("staircase").and_then(Value::as_bool).unwrap_or(false)),
                    ),
                    "PiecewiseConstantDecay" => opt.learning_rate(
                        PiecewiseConstantDecay::new(
                            c["boundaries"].as_array().unwrap().iter().map(|b| b.as_i64().unwrap()).collect(),
                            c["values"].as_array().unwrap().iter().map(f).collect(),
                        )
                        .unwrap(),
                    ),
                    "CosineDecay" => opt.learning_rate(
                        CosineDecay::new(
                            f(&c["initial_learning_rate"]),
                            c["decay_steps"].as_u64().unwrap(),
                            f(&c["alpha"]),
                        )
                        .unwrap(),
                    ),
                    other => panic!("unknown schedule {other}"),
                };
            }
            Box::new(opt) as Box<dyn Optimizer>
        }};
    }
    match config["optimizer"].as_str().unwrap() {
        "SGD" => with_common!(Sgd::new(lr.unwrap_or(0.01))
            .momentum(kw.get("momentum").map(f).unwrap_or(0.0))
            .nesterov(kw.get("nesterov").and_then(Value::as_bool).unwrap_or(false))),
        "Adam" => with_common!(
            Adam::new(lr.unwrap_or(0.001)).amsgrad(kw.get("amsgrad").and_then(Value::as_bool).unwrap_or(false))
        ),
        "AdamW" => with_common!(
            AdamW::new(lr.unwrap_or(0.001)).amsgrad(kw.get("amsgrad").and_then(Value::as_bool).unwrap_or(false))
        ),
        "RMSprop" => with_common!(RmsProp::new(lr.unwrap_or(0.001))
            .rho(kw.get("rho").map(f).unwrap_or(0.9))
            .momentum(kw.get("momentum").map(f).unwrap_or(0.0))
            .centered(kw.get("centered").and_then(Value::as_bool).unwrap_or(false))),
        "Adagrad" => with_common!(Adagrad::new(lr.unwrap_or(0.001))
            .initial_accumulator_value(kw.get("initial_accumulator_value").map(f).unwrap_or(0.1))),
        other => panic!("unknown optimizer {other}"),
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if !w.is_finite() {
            assert!(g == w || (g.is_nan() && w.is_nan()), "{what}[{i}]: got {g}, Keras {w}");
            continue;
        }
        let tol = 2e-5 * w.abs().max(1e-3);
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, Keras {w} (diff {:e})", (g - w).abs());
    }
}

#[test]
fn trajectories_match_keras() {
    let fixture: Value = serde_json::from_str(FIXTURE).unwrap();
    let initial = &fixture["initial"];
    let paths = ["dense/kernel", "dense/bias", "scale"];
    let shapes: HashMap<&str, Vec<usize>> =
        [("dense/kernel", vec![2, 3]), ("dense/bias", vec![3]), ("scale", vec![2])].into();
    for config in fixture["configs"].as_array().unwrap() {
        let name = config["name"].as_str().unwrap();
        let mut state = StateStore::new();
        let mut vars: Vec<Variable> = Vec::new();
        for path in paths {
            let (scope, leaf) = path.rsplit_once('/').map_or((None, path), |(s, l)| (Some(s), l));
            let value = Tensor::from_shape_vec(shapes[path].clone(), floats(&initial[path])).unwrap();
            let mut spec = VariableSpec::new(value).name(leaf);
            if let Some(scope) = scope {
                spec = spec.name_scope(scope);
            }
            vars.push(state.create(spec).unwrap());
        }
        for path in config["overwrite_with_gradient"].as_array().unwrap() {
            let var = state.find(path.as_str().unwrap()).unwrap();
            state.set_overwrite_with_gradient(&var, true).unwrap();
        }
        let mut opt = optimizer_for(config);
        opt.build(&mut state, &vars).unwrap();
        let ours_path = without_instance_suffix;
        let keras_paths: Vec<String> =
            config["optimizer_variables"].as_array().unwrap().iter().map(|p| ours_path(p.as_str().unwrap())).collect();
        let ours: Vec<String> = opt.variables().iter().map(|v| v.path().to_string()).collect();
        let mut sorted_keras = keras_paths.clone();
        sorted_keras.sort();
        let mut sorted_ours = ours.clone();
        sorted_ours.sort();
        assert_eq!(sorted_ours, sorted_keras, "{name}: optimizer variable paths");
        if !name.starts_with("rmsprop") && !name.contains("amsgrad") {
            // Keras's RMSprop, and Adam's velocity_hat, create each kind of slot for all variables in turn;
            // ours interleave them per variable (the set is the same).
            assert_eq!(ours, keras_paths, "{name}: optimizer variables in Keras's order");
        }

        let config_grads = config.get("grads").unwrap_or(&fixture["grads"]);
        for (step, (grads, want)) in
            config_grads.as_array().unwrap().iter().zip(config["steps"].as_array().unwrap()).enumerate()
        {
            let grads = Grads::from_pairs(vars.iter().map(|v| {
                (v.clone(), Tensor::from_shape_vec(shapes[v.path()].clone(), floats(&grads[v.path()])).unwrap())
            }))
            .unwrap();
            state = opt.apply(state, &grads).unwrap();
            for v in &vars {
                let got = state.get(v).unwrap().to_vec::<f32>().unwrap();
                assert_close(
                    &format!("{name} step {} {}", step + 1, v.path()),
                    &got,
                    &floats(&want["params"][v.path()]),
                );
            }
            for (path, value) in want["optimizer"].as_object().unwrap() {
                let var = state.find(&ours_path(path)).unwrap();
                let got = state.get(&var).unwrap().cast(purestate::DType::Float32).to_vec::<f32>().unwrap();
                assert_close(&format!("{name} step {} {path}", step + 1), &got, &floats(value));
            }
        }
    }
}

fn one_var() -> (StateStore, Variable) {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Ones).shape([4]).name("w")).unwrap();
    (state, w)
}

#[test]
fn gradient_errors_are_caught_before_any_update() {
    let (mut state, w) = one_var();
    let other = state.create(VariableSpec::new(init::Ones).shape([2]).name("other")).unwrap();
    let frozen = state.create(VariableSpec::new(init::Ones).shape([2]).name("frozen")).unwrap();
    let mut opt = Adam::default();
    let err = opt.apply(state.clone(), &Grads::new()).unwrap_err();
    assert!(matches!(err, Error::NotBuilt { .. }));
    opt.build(&mut state, &[w.clone(), frozen.clone()]).unwrap();
    state.set_trainable(&frozen, false).unwrap();
    let g = |v: &Variable, n: usize| (v.clone(), Tensor::from(vec![1.0f32; n]));

    let err = opt.apply(state.clone(), &Grads::from_pairs([g(&w, 4), g(&other, 2)]).unwrap()).unwrap_err();
    assert!(matches!(err, Error::UnknownGradient { ref path } if path == "other"));
    let err = opt.apply(state.clone(), &Grads::from_pairs([g(&w, 4), g(&frozen, 2)]).unwrap()).unwrap_err();
    assert!(matches!(err, Error::FrozenGradient { ref path } if path == "frozen"));
    let err = opt.apply(state.clone(), &Grads::from_pairs([g(&w, 3)]).unwrap()).unwrap_err();
    assert_eq!(err.to_string(), "`w`: shape mismatch, expected (4,), got (3,)");
    state.set_trainable(&frozen, true).unwrap();
    let err = opt.apply(state.clone(), &Grads::from_pairs([g(&w, 4)]).unwrap()).unwrap_err();
    assert!(matches!(err, Error::MissingGradient { ref path } if path == "frozen"));
    let lenient = opt.clone().allow_missing_gradients(true);
    let next = lenient.apply(state.clone(), &Grads::from_pairs([g(&w, 4)]).unwrap()).unwrap();
    assert_eq!(next.get(&frozen).unwrap().to_vec::<f32>().unwrap(), [1.0, 1.0]);
    assert_ne!(next.get(&w).unwrap().to_vec::<f32>().unwrap(), [1.0; 4]);
}

#[test]
fn conflicting_clip_options_are_an_error() {
    let (mut state, w) = one_var();
    let err = Sgd::default().clipnorm(1.0).clipvalue(0.5).build(&mut state, &[w]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert_eq!(state.len(), 1, "a failed build leaves the store as it was");
}

#[test]
fn non_float_variables_cannot_be_optimized() {
    let mut state = StateStore::new();
    let c = state.create(VariableSpec::new(Tensor::from([1i32, 2])).name("c")).unwrap();
    assert!(matches!(Sgd::default().build(&mut state, &[c]), Err(Error::InvalidArgument { .. })));
}

#[test]
fn unshared_state_is_updated_in_place_and_snapshots_are_untouched() {
    let (mut state, w) = one_var();
    let mut opt = Adam::new(0.1);
    opt.build(&mut state, std::slice::from_ref(&w)).unwrap();
    let grads = Grads::from_pairs([(w.clone(), Tensor::from(vec![0.5f32; 4]))]).unwrap();
    let state = opt.apply(state, &grads).unwrap(); // first step: buffers become the optimizer's own
    let ptr = state.get(&w).unwrap().as_ptr();
    let state = opt.apply(state, &grads).unwrap();
    assert_eq!(state.get(&w).unwrap().as_ptr(), ptr, "an unshared buffer is updated in place");

    let snapshot = state.clone();
    let before = snapshot.fingerprint();
    let next = opt.apply(state, &grads).unwrap();
    assert_eq!(snapshot.fingerprint(), before, "the snapshot is bit-identical");
    assert_eq!(snapshot.get(&w).unwrap().as_ptr(), ptr, "the snapshot keeps the old buffer");
    assert_ne!(next.get(&w).unwrap().as_ptr(), ptr, "the shared buffer was copied");
    assert_eq!(opt.iterations(&next).unwrap(), 3);
    assert_eq!(opt.iterations(&snapshot).unwrap(), 2);
}

#[test]
fn constraints_apply_after_the_update() {
    #[derive(Debug)]
    struct Clamp;
    impl purestate::constraint::Constraint for Clamp {
        fn apply(&self, value: &Tensor) -> purestate::Result<Tensor> {
            let v: Vec<f32> = value.to_vec::<f32>()?.into_iter().map(|x| x.max(0.0)).collect();
            Tensor::from_shape_vec(value.shape(), v)
        }
        fn name(&self) -> &'static str {
            "Clamp"
        }
    }
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(Tensor::from([0.05f32, 1.0])).name("w").constraint(Clamp)).unwrap();
    let mut opt = Sgd::new(1.0);
    opt.build(&mut state, std::slice::from_ref(&w)).unwrap();
    let next = opt.apply(state, &Grads::from_pairs([(w.clone(), Tensor::from([1.0f32, 0.5]))]).unwrap()).unwrap();
    assert_eq!(next.get(&w).unwrap().to_vec::<f32>().unwrap(), [0.0, 0.5]);
}
