//! The optimizers' own state as Keras 3 keeps it: moving averages (`use_ema`), gradient accumulators and the
//! dynamic loss scale are optimizer variables in the store, so they survive checkpoints, are restored by a
//! rollback, and change only through `apply`. Their trajectories against Keras are in `optim.rs`.

use purestate::grad::Grads;
use purestate::optim::{Adam, LossScaleOptimizer, Optimizer, Sgd};
use purestate::{checkpoint, Error, StateStore, Tensor, Trainer, Variable, VariableSpec};

/// A kernel and a bias under `dense/`, as in Keras's fixture.
fn model() -> (StateStore, Vec<Variable>) {
    let mut state = StateStore::new();
    let kernel = state
        .create(
            VariableSpec::new(Tensor::from_shape_vec([2, 2], vec![0.5f32, -1.0, 1.5, 2.0]).unwrap())
                .name("kernel")
                .name_scope("dense"),
        )
        .unwrap();
    let bias = state.create(VariableSpec::new(Tensor::from([0.1f32, -0.2])).name("bias").name_scope("dense")).unwrap();
    (state, vec![kernel, bias])
}

/// The gradients of step `k`: finite, different at every step.
fn grads(vars: &[Variable], k: usize) -> Grads {
    let x = k as f32 + 1.0;
    Grads::from_pairs(vars.iter().map(|v| {
        let n = v.shape().dims().iter().product::<usize>();
        let values: Vec<f32> = (0..n).map(|i| ((i as f32 + 1.0) * x).sin() * 0.5).collect();
        (v.clone(), Tensor::from_shape_vec(v.shape().dims().to_vec(), values).unwrap())
    }))
    .unwrap()
}

/// Everything at once: loss scaling around Adam with moving averages (overwritten every 2 updates) and
/// gradient accumulation over 2 calls.
fn full_optimizer() -> LossScaleOptimizer<Adam> {
    LossScaleOptimizer::new(Adam::new(0.01).use_ema(0.9).ema_overwrite_frequency(2).gradient_accumulation_steps(2))
        .initial_scale(4.0)
        .dynamic_growth_steps(2)
}

fn paths(opt: &dyn Optimizer) -> Vec<String> {
    opt.variables().iter().map(|v| v.path().to_string()).collect()
}

#[test]
fn optimizer_state_has_keras_paths_in_keras_order() {
    let (mut state, vars) = model();
    let mut opt = full_optimizer();
    opt.build(&mut state, &vars).unwrap();
    assert_eq!(
        paths(&opt),
        [
            "loss_scale_optimizer/iteration",
            "loss_scale_optimizer/learning_rate",
            "loss_scale_optimizer/step_counter",
            "loss_scale_optimizer/dynamic_scale",
            "adam/iteration",
            "adam/learning_rate",
            "adam/dense_kernel_average",
            "adam/dense_bias_average",
            "adam/dense_kernel_gradient_accumulator",
            "adam/dense_bias_gradient_accumulator",
            "adam/dense_kernel_momentum",
            "adam/dense_kernel_velocity",
            "adam/dense_bias_momentum",
            "adam/dense_bias_velocity",
        ]
    );
    for var in opt.variables() {
        assert!(!state.trainable(&var).unwrap(), "{} is an optimizer variable", var.path());
    }
    assert_eq!(opt.average(&vars[0]).unwrap().path(), "adam/dense_kernel_average");
}

#[test]
fn optimizer_state_survives_a_checkpoint_and_resumes_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("step3.safetensors");
    let (mut state, vars) = model();
    let mut opt = full_optimizer();
    opt.build(&mut state, &vars).unwrap();
    for k in 0..3 {
        state = opt.apply(state, &grads(&vars, k)).unwrap();
    }
    checkpoint::save(&state, &file).unwrap();
    let mut uninterrupted = state;

    // A new process: the same model and optimizer, built, then filled from the file by path.
    let (mut resumed, vars2) = model();
    let mut opt2 = full_optimizer();
    opt2.build(&mut resumed, &vars2).unwrap();
    let report = checkpoint::restore(&mut resumed, &file).unwrap();
    assert!(report.is_complete(), "{report:?}");
    for path in
        ["adam/dense_kernel_average", "adam/dense_bias_gradient_accumulator", "loss_scale_optimizer/dynamic_scale"]
    {
        assert!(report.applied.iter().any(|p| p == path), "{path} restored");
    }
    assert_eq!(resumed.fingerprint(), uninterrupted.fingerprint());
    assert_eq!(opt2.iterations(&resumed).unwrap(), opt.iterations(&uninterrupted).unwrap());
    for k in 3..7 {
        uninterrupted = opt.apply(uninterrupted, &grads(&vars, k)).unwrap();
        resumed = opt2.apply(resumed, &grads(&vars2, k)).unwrap();
        assert_eq!(resumed.fingerprint(), uninterrupted.fingerprint(), "step {}", k + 1);
    }
}

#[test]
fn a_rollback_restores_averages_accumulators_and_the_loss_scale() {
    let (mut state, vars) = model();
    let mut opt = full_optimizer();
    opt.build(&mut state, &vars).unwrap();
    let mut trainer: Trainer = Trainer::new(state);
    // Call 1 accumulates only (the accumulators change, the weights do not).
    let next = opt.apply(trainer.state().clone(), &grads(&vars, 0)).unwrap();
    trainer.commit(next).unwrap();
    trainer.tag("mid-accumulation").unwrap();
    let saved = trainer.state().clone();
    let tracked: Vec<Variable> = opt.variables();
    // Calls 2 to 4: two updates, two doublings of the scale, a reset of the accumulators.
    for k in 1..4 {
        let next = opt.apply(trainer.state().clone(), &grads(&vars, k)).unwrap();
        trainer.commit(next).unwrap();
    }
    for var in &tracked {
        if var.path().ends_with("/learning_rate") || var.path() == "loss_scale_optimizer/iteration" {
            continue; // Keras never changes these
        }
        assert_ne!(
            trainer.state().get(var).unwrap().to_f64_vec(),
            saved.get(var).unwrap().to_f64_vec(),
            "{} moved after the tag",
            var.path()
        );
    }
    trainer.rollback(trainer.version_of_tag("mid-accumulation").unwrap()).unwrap();
    assert_eq!(trainer.state().fingerprint(), saved.fingerprint());
    for var in tracked.iter().chain(&vars) {
        assert!(trainer.state().get(var).unwrap().ptr_eq(&saved.get(var).unwrap()), "{}", var.path());
    }
    assert_eq!(opt.iterations(trainer.state()).unwrap(), 0);
    assert_eq!(opt.dynamic_scale(trainer.state()).unwrap(), 4.0);
}

#[test]
fn the_ema_view_evaluates_with_the_averages_and_leaves_the_state_unchanged() {
    let (mut state, vars) = model();
    let mut opt = Adam::new(0.05).use_ema(0.5);
    opt.build(&mut state, &vars).unwrap();
    for k in 0..4 {
        state = opt.apply(state, &grads(&vars, k)).unwrap();
    }
    let before = state.fingerprint();
    let weights: Vec<Vec<f32>> = vars.iter().map(|v| state.get(v).unwrap().to_vec::<f32>().unwrap()).collect();
    let view = opt.ema_state(&state).unwrap();
    assert_eq!(state.fingerprint(), before, "the training state is unchanged");
    for (var, weight) in vars.iter().zip(&weights) {
        let average = opt.average(var).unwrap();
        assert!(view.get(var).unwrap().ptr_eq(&state.get(&average).unwrap()), "shared, not copied");
        assert_eq!(&state.get(var).unwrap().to_vec::<f32>().unwrap(), weight);
        assert_ne!(&view.get(var).unwrap().to_vec::<f32>().unwrap(), weight);
    }
    assert_eq!(view.base(), state.base());
    // Training goes on from the training state, not from the view.
    let next = opt.apply(state.clone(), &grads(&vars, 4)).unwrap();
    assert_eq!(opt.iterations(&next).unwrap(), 5);
    assert_eq!(opt.finalize_variable_values(state).unwrap().fingerprint(), view.fingerprint());

    let (mut plain_state, plain_vars) = model();
    let mut plain = Sgd::new(0.1);
    plain.build(&mut plain_state, &plain_vars).unwrap();
    let err = plain.ema_state(&plain_state).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { arg: "use_ema", .. }), "{err}");
    let same = plain.finalize_variable_values(plain_state.clone()).unwrap();
    assert_eq!(same.fingerprint(), plain_state.fingerprint(), "finalize without EMA changes nothing");
}

#[test]
fn gradient_accumulation_steps_below_two_is_an_invalid_argument() {
    for steps in [0, 1] {
        let (mut state, vars) = model();
        let err = Sgd::new(0.1).gradient_accumulation_steps(steps).build(&mut state, &vars).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { arg: "gradient_accumulation_steps", .. }), "{err}");
        assert_eq!(state.len(), 2, "a failed build leaves the store as it was");
        if steps == 0 {
            assert_eq!(
                err.to_string(),
                "Optimizer::build: invalid argument `gradient_accumulation_steps`: optimizer `sgd`: must be at \
                 least 2, got 0"
            );
        }
    }
    let (mut state, vars) = model();
    let refused = [
        (Adam::new(0.1).use_ema(1.5), "ema_momentum"),
        (Adam::new(0.1).use_ema(f64::NAN), "ema_momentum"),
        (Adam::new(0.1).ema_overwrite_frequency(3), "ema_overwrite_frequency"),
        (Adam::new(0.1).use_ema(0.9).ema_overwrite_frequency(0), "ema_overwrite_frequency"),
    ];
    for (mut opt, arg) in refused {
        let err = opt.build(&mut state, &vars).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { arg: a, .. } if a == arg), "{err}");
    }
}

#[test]
fn options_changed_after_build_need_a_new_build() {
    let (mut state, vars) = model();
    let mut opt = Adam::new(0.1);
    opt.build(&mut state, &vars).unwrap();
    let mut with_ema = opt.clone().use_ema(0.9);
    let err = with_ema.apply(state.clone(), &grads(&vars, 0)).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { arg: "use_ema", .. }), "{err}");
    with_ema.build(&mut state, &vars).unwrap();
    assert!(with_ema.average(&vars[1]).is_some());
    let next = with_ema.apply(state, &grads(&vars, 0)).unwrap();
    let average = next.get(&with_ema.average(&vars[1]).unwrap()).unwrap();
    assert_eq!(average.to_vec::<f32>().unwrap(), next.get(&vars[1]).unwrap().to_vec::<f32>().unwrap());
}

#[test]
fn accumulation_changes_the_weights_on_every_nth_call_only() {
    let (mut state, vars) = model();
    let mut opt = Sgd::new(0.5).gradient_accumulation_steps(3);
    opt.build(&mut state, &vars).unwrap();
    let start = state.get(&vars[1]).unwrap().to_vec::<f32>().unwrap();
    let mut sum = [0.0f32; 2];
    for k in 0..3 {
        let g = grads(&vars, k);
        let gb = g.get(&vars[1]).unwrap().to_vec::<f32>().unwrap();
        sum = [sum[0] + gb[0], sum[1] + gb[1]];
        state = opt.apply(state, &g).unwrap();
        if k < 2 {
            assert_eq!(state.get(&vars[1]).unwrap().to_vec::<f32>().unwrap(), start, "call {}", k + 1);
            assert_eq!(opt.iterations(&state).unwrap(), 0);
        }
    }
    assert_eq!(opt.iterations(&state).unwrap(), 1, "Keras's iterations count updates");
    let accumulator = state.find("sgd/dense_bias_gradient_accumulator").unwrap();
    assert_eq!(state.get(&accumulator).unwrap().to_vec::<f32>().unwrap(), [0.0, 0.0]);
    let got = state.get(&vars[1]).unwrap().to_vec::<f32>().unwrap();
    for i in 0..2 {
        let want = start[i] - sum[i] / 3.0 * 0.5;
        assert!((got[i] - want).abs() < 1e-6, "{} vs {want}", got[i]);
    }
}

#[test]
fn a_non_finite_step_under_loss_scaling_commits_a_version_with_the_weights_unchanged_and_the_scale_halved() {
    let (mut state, vars) = model();
    let mut opt = LossScaleOptimizer::new(Adam::new(0.01));
    opt.build(&mut state, &vars).unwrap();
    let mut trainer: Trainer = Trainer::new(state).with_nonfinite_guard(true);
    let next = opt.apply(trainer.state().clone(), &grads(&vars, 0)).unwrap();
    trainer.commit(next).unwrap();
    assert_eq!(opt.step_counter(trainer.state()).unwrap(), 1);
    let before = trainer.state().clone();

    let mut bad = grads(&vars, 1);
    for (var, g) in bad.iter_mut() {
        if var.path() == "dense/bias" {
            *g = Tensor::from([f32::NAN, 1.0]);
        }
    }
    let next = opt.apply(trainer.state().clone(), &bad).unwrap();
    let version = trainer.commit(next).unwrap();
    assert_eq!(version, 2, "the skipped step is a committed version");
    let after = trainer.state();
    for var in vars.iter().chain(&opt.inner().variables()) {
        assert!(after.get(var).unwrap().ptr_eq(&before.get(var).unwrap()), "{} unchanged", var.path());
    }
    assert_eq!(opt.dynamic_scale(after).unwrap(), 16384.0);
    assert_eq!(opt.step_counter(after).unwrap(), 0);
    assert_eq!(opt.iterations(after).unwrap(), 1);
    assert_ne!(trainer.fingerprint(2).unwrap(), trainer.fingerprint(1).unwrap());
}

/// `n` float32 variables of `size` elements each, values different per variable.
fn many_variables(n: usize, size: usize) -> (StateStore, Vec<Variable>) {
    let mut state = StateStore::new();
    let vars = (0..n)
        .map(|v| {
            let values: Vec<f32> = (0..size).map(|i| ((i * 7 + v * 13) % 101) as f32 * 0.01 - 0.5).collect();
            state.create(VariableSpec::new(Tensor::from(values)).name(format!("w{v}")).name_scope("many")).unwrap()
        })
        .collect();
    (state, vars)
}

/// AdamW with clipping, weight decay and moving averages over 40 variables of 8 Ki elements (each below the
/// parallel threshold, together above it, so the updates run side by side), three steps committed through a
/// trainer: the same bits at 1, 2 and 7 threads, and for every variable the bits of the same optimizer run on a
/// store holding that variable alone.
#[test]
fn many_small_variables_updated_side_by_side_give_the_bits_of_one_at_a_time() {
    let optimizer = || purestate::optim::AdamW::new(0.01).weight_decay(0.05).clipnorm(1.0).use_ema(0.9);
    let train = |state: StateStore, vars: &[Variable], threads: usize| -> StateStore {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
            let mut opt = optimizer();
            let mut state = state;
            opt.build(&mut state, vars).unwrap();
            let mut trainer: Trainer = Trainer::new(state);
            for k in 0..3 {
                let next = opt.apply(trainer.state().clone(), &grads(vars, k)).unwrap();
                trainer.commit(next).unwrap();
            }
            trainer.state().clone()
        })
    };
    let (state, vars) = many_variables(40, 8 << 10);
    let one = train(state.clone(), &vars, 1);
    for threads in [2, 7] {
        let other = train(state.clone(), &vars, threads);
        assert_eq!(other.fingerprint(), one.fingerprint(), "{threads} threads");
    }
    for (v, var) in vars.iter().enumerate().step_by(13) {
        let (alone, alone_vars) = many_variables(v + 1, 8 << 10);
        let alone_var = &alone_vars[v];
        let mut only = StateStore::new();
        let copy =
            only.create(VariableSpec::new(alone.get(alone_var).unwrap()).name(format!("w{v}")).name_scope("many"));
        let copy = copy.unwrap();
        let trained = train(only, std::slice::from_ref(&copy), 2);
        let want = trained.get(&copy).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(one.get(var).unwrap().to_vec::<f32>().unwrap(), want, "{}", var.path());
    }
}
