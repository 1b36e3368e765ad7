//! The differentiated step returns its state: assignments made inside `value_and_grad_aux` / `ValueAndGrad::call`
//! (moving statistics, seed states, counters) come back with the gradients; the tuple forms refuse to lose them;
//! assigning a differentiated variable is an error; the auxiliary value; donation through the owned form;
//! replicas combining the returned states.

use purestate::grad::{self, ValueAndGrad};
use purestate::optim::{Adam, Optimizer, Sgd};
use purestate::random::{self, SeedGenerator};
use purestate::replica::{ReplicaOutput, Replicas};
use purestate::{init, Aggregation, DType, Error, Result, Scope, StateStore, Tensor, Trainer, VariableSpec};

/// `w` (trainable, 4), `moving` (non-trainable, 4, aggregation mean), a seed generator.
fn model() -> (StateStore, purestate::Variable, purestate::Variable, SeedGenerator) {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Ones).shape([4]).name("w")).unwrap();
    let moving = state
        .create(
            VariableSpec::new(init::Zeros).shape([4]).name("moving").trainable(false).aggregation(Aggregation::Mean),
        )
        .unwrap();
    let seeds = SeedGenerator::new(&mut state, 7).unwrap();
    (state, w, moving, seeds)
}

/// A dropout-and-statistics loss: `moving = 0.9 moving + 0.1 x*w`, a mask from the seed generator, the sum of
/// the kept `x*w`. Returns the loss and the mask.
fn loss(
    scope: &mut Scope,
    w: &purestate::Variable,
    moving: &purestate::Variable,
    seeds: &SeedGenerator,
    x: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let h = scope.get(w)?.mul(x)?;
    let stat = scope.get(moving)?.mul(0.9)?.add(&h.mul(0.1)?)?; // traced through h: stored detached
    scope.assign(moving, stat)?;
    let keep = random::bernoulli(seeds.next_key_in(scope)?, 0.5, [4])?;
    let kept = h.mul(keep.cast(DType::Float32))?;
    Ok((kept.sum(None, false)?, keep))
}

#[test]
fn the_differentiated_step_returns_moving_statistics_and_seed_state() {
    let (state, w, moving, seeds) = model();
    let x = Tensor::from([1.0f32, 2.0, 3.0, 4.0]);
    let out = grad::value_and_grad_aux(&state, |s| loss(s, &w, &moving, &seeds, &x)).unwrap();
    assert_eq!(out.state.get(&moving).unwrap().to_vec::<f32>().unwrap(), [0.1, 0.2, 0.3, 0.4]);
    assert_eq!(out.state.get(seeds.variable()).unwrap().to_vec::<u32>().unwrap(), [7, 1]);
    // The gradient is the mask times x; the mask came back as aux.
    let mask = out.aux.cast(DType::Float32).to_vec::<f32>().unwrap();
    let expected: Vec<f32> = mask.iter().zip([1.0f32, 2.0, 3.0, 4.0]).map(|(m, x)| m * x).collect();
    assert_eq!(out.grads.get(&w).unwrap().to_vec::<f32>().unwrap(), expected);
    // The state the call was given never changed; a second call from the returned state reads the statistic
    // as a plain value (it was computed from a traced read, and stored detached).
    assert_eq!(state.get(&moving).unwrap().to_vec::<f32>().unwrap(), [0.0; 4]);
    let again = grad::value_and_grad_aux(&out.state, |s| loss(s, &w, &moving, &seeds, &x)).unwrap();
    let m = again.state.get(&moving).unwrap().to_vec::<f32>().unwrap();
    assert!((m[3] - (0.9 * 0.4 + 0.4)).abs() < 1e-6, "{m:?}");
}

#[test]
fn successive_steps_draw_new_masks_and_a_replay_draws_the_same() {
    let (mut state, w, moving, seeds) = model();
    let mut opt = Adam::new(1e-2);
    opt.build(&mut state, std::slice::from_ref(&w)).unwrap();
    let x = Tensor::from([1.0f32, -2.0, 3.0, -4.0]);
    let step = |state: StateStore| -> Result<(StateStore, Tensor)> {
        let out = grad::value_and_grad_aux(state, |s| loss(s, &w, &moving, &seeds, &x))?;
        Ok((opt.apply(out.state, &out.grads)?, out.aux))
    };
    let mut trainer: Trainer = Trainer::new(state);
    let mut masks = Vec::new();
    for _ in 0..6 {
        let (next, mask) = step(trainer.state().clone()).unwrap();
        trainer.commit(next).unwrap();
        masks.push(mask.to_vec::<bool>().unwrap());
    }
    masks.dedup();
    assert!(masks.len() > 1, "six steps drew one mask: the seed state did not advance");
    // Replaying from version 2 gives the same bits as the committed version 3.
    let v2 = trainer.get(2).unwrap().clone();
    let (replayed, _) = step(v2).unwrap();
    assert_eq!(replayed.fingerprint(), trainer.fingerprint(3).unwrap());
}

#[test]
fn the_forms_without_state_refuse_to_drop_an_assignment() {
    let (state, w, moving, seeds) = model();
    let x = Tensor::from([1.0f32, 2.0, 3.0, 4.0]);
    let err = grad::value_and_grad(&state, |s| Ok(loss(s, &w, &moving, &seeds, &x)?.0)).unwrap_err();
    assert!(matches!(&err, Error::StateDropped { op: "value_and_grad", paths }
        if paths == &["moving".to_string(), "seed_generator/seed_generator_state".to_string()]));
    assert_eq!(
        err.to_string(),
        "value_and_grad: the function assigned `moving`, `seed_generator/seed_generator_state`, but this call \
         returns no state; use `ValueAndGrad::call` or `grad::value_and_grad_aux`, whose output carries it"
    );
    let err = grad::grad(&state, |s| Ok(loss(s, &w, &moving, &seeds, &x)?.0)).unwrap_err();
    assert!(matches!(err, Error::StateDropped { op: "grad", .. }));
    // A function that assigns nothing is fine with either form.
    let (l, g) = grad::value_and_grad(&state, |s| s.get(&w)?.sum(None, false)).unwrap();
    assert_eq!(l.to_f64().unwrap(), 4.0);
    assert_eq!(g.get(&w).unwrap().to_vec::<f32>().unwrap(), [1.0; 4]);
}

#[test]
fn assigning_a_differentiated_variable_is_an_error_naming_it() {
    let (state, w, moving, _) = model();
    let fingerprint = state.fingerprint();
    for how in 0..3 {
        let err = ValueAndGrad::new()
            .call(&state, |s| {
                let v = s.get(&w)?;
                match how {
                    0 => s.assign(&w, v.mul(2.0)?)?,
                    1 => s.assign_add(&w, 1.0f32)?,
                    _ => s.assign_sub(&w, Tensor::from([1.0f32; 4]))?,
                }
                v.sum(None, false)
            })
            .unwrap_err();
        assert!(matches!(&err, Error::AssignDifferentiated { path } if path == "w"), "{err}");
        assert!(err.to_string().starts_with("`w`: assigned inside the function differentiated with respect to it"));
    }
    assert_eq!(state.fingerprint(), fingerprint);
    // Not differentiated with respect to it: assigning it is allowed (and comes back in the state).
    let out = grad::wrt(std::slice::from_ref(&moving))
        .call(&state, |s| {
            s.assign(&w, Tensor::from([5.0f32; 4]))?;
            s.get(&moving)?.sum(None, false)
        })
        .unwrap();
    assert_eq!(out.state.get(&w).unwrap().to_vec::<f32>().unwrap(), [5.0; 4]);
}

#[test]
fn a_state_passed_by_value_is_donated_to_the_optimizer_step() {
    let (mut state, w, moving, seeds) = model();
    let mut opt = Sgd::new(0.1);
    opt.build(&mut state, std::slice::from_ref(&w)).unwrap();
    let x = Tensor::from([1.0f32, 2.0, 3.0, 4.0]);
    let ptr = state.get(&w).unwrap().as_ptr();
    let out = grad::value_and_grad_aux(state, |s| loss(s, &w, &moving, &seeds, &x)).unwrap();
    drop(out.aux);
    let next = opt.apply(out.state, &out.grads).unwrap();
    assert_eq!(next.get(&w).unwrap().as_ptr(), ptr, "the parameter is updated in place");
}

#[test]
fn replicas_combine_the_states_their_differentiated_steps_return() {
    let (state, w, moving, seeds) = model();
    let xs: Vec<f32> = (1..=8).map(|i| i as f32).collect();
    let out = Replicas::in_process(2)
        .unwrap()
        .step(&state, 2, |ctx, state| {
            let x = Tensor::from(xs[ctx.range().start * 4..ctx.range().end * 4].to_vec()).reshape(&[4]).unwrap();
            let out = grad::value_and_grad_aux(state, |s| loss(s, &w, &moving, &seeds, &x))?;
            Ok(ReplicaOutput { state: out.state, grads: out.grads, loss: out.loss.to_f64()? as f32 })
        })
        .unwrap();
    // `moving` has aggregation mean: the mean of the replicas' 0.1 * x.
    let got = out.state.get(&moving).unwrap().to_vec::<f32>().unwrap();
    let want: Vec<f32> = (0..4).map(|i| (0.1 * xs[i] + 0.1 * xs[4 + i]) / 2.0).collect();
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{got:?}");
    }
    // The seed state (aggregation none) advanced identically on both replicas: accepted as one value.
    assert_eq!(out.state.get(seeds.variable()).unwrap().to_vec::<u32>().unwrap(), [7, 1]);
}
