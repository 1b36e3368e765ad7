//! The example model trained for a few epochs on the real digits data reaches a held-out accuracy above 90%,
//! and a short run replays bit for bit with 1 and 2 threads.

#[path = "../../examples/common/digits.rs"]
mod digits;
#[path = "../../examples/common/mlp.rs"]
mod mlp;

use digits::{epoch_batches, Digits};
use mlp::{train_step, StepRecord};
use purestate::random::Key;
use purestate::Trainer;

fn run(epochs: u32) -> (f64, Trainer<StepRecord>, mlp::Mlp, purestate::optim::Adam, Digits) {
    let data = Digits::load().unwrap();
    let key = Key::new(3);
    let (train, test) = data.split(key.fold_in(0), 0.2).unwrap();
    let (state, model, opt) = mlp::build(key, 1e-2).unwrap();
    let mut trainer: Trainer<StepRecord> = Trainer::new(state).with_nonfinite_guard(true);
    for epoch in 1..=epochs {
        for (i, ids) in epoch_batches(&train, key.fold_in(2), epoch, 64).unwrap().into_iter().enumerate() {
            let record =
                StepRecord { epoch, step: i as u32, ids: ids.iter().map(|&i| i as u32).collect(), learning_rate: 1e-2 };
            let (next, _) = train_step(trainer.state().clone(), &model, &opt, &data, &record).unwrap();
            trainer.commit_with(next, record).unwrap();
        }
    }
    let acc = model.accuracy(trainer.state(), &data, &test).unwrap();
    (acc, trainer, model, opt, data)
}

#[test]
fn a_few_epochs_reach_ninety_percent_held_out() {
    let (acc, ..) = run(4);
    assert!(acc > 0.90, "held-out accuracy {acc}");
}

#[test]
fn replay_is_bit_identical_with_one_and_two_threads() {
    let (_, trainer, model, opt, data) = run(1);
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let report = pool
            .install(|| trainer.replay(0, trainer.head(), |s, rec| Ok(train_step(s, &model, &opt, &data, rec)?.0)))
            .unwrap();
        assert!(report.is_bit_identical(), "{threads} threads: {report}");
        assert_eq!(report.steps as u64, trainer.head());
    }
}

/// The two MLPs of `benches/grad.rs` (64-128-10 at batch 128, 784-1024-1024-10 at batch 256), ten Adam steps
/// committed through a trainer: the fingerprint of every version is the same at 1, 2 and 7 threads. The large
/// one splits its products and its elementwise work (256 Ki elements) across threads; the bias gradients sum
/// columns in parallel blocks.
#[test]
fn mlp_steps_are_bit_identical_at_1_2_and_7_threads() {
    use purestate::optim::{Adam, Optimizer};
    use purestate::{grad, init, losses, DType, Retention, Scope, StateStore, Tensor, Trainer, Variable, VariableSpec};

    fn fingerprints(sizes: &[usize], batch: usize, threads: usize) -> Vec<purestate::Fingerprint> {
        let mut state = StateStore::new();
        let mut layers = Vec::new();
        for (i, pair) in sizes.windows(2).enumerate() {
            let w = VariableSpec::new(init::GlorotUniform).shape([pair[0], pair[1]]).name(format!("w{i}"));
            let b = VariableSpec::new(init::Zeros).shape([pair[1]]).name(format!("b{i}"));
            layers.push((state.create(w).unwrap(), state.create(b).unwrap()));
        }
        let mut opt = Adam::new(1e-3);
        let vars: Vec<Variable> = layers.iter().flat_map(|(w, b)| [w.clone(), b.clone()]).collect();
        opt.build(&mut state, &vars).unwrap();
        let n_in = sizes[0];
        let x = Tensor::from_fn([batch, n_in], DType::Float32, |i| ((i * 7 + i / n_in) % 17) as f64 / 16.0 - 0.4);
        let classes = *sizes.last().unwrap();
        let labels = Tensor::from((0..batch).map(|i| (i * 3 % classes) as i32).collect::<Vec<_>>());
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut trainer: Trainer = Trainer::new(state).with_retention(Retention::keep_last(2));
            let mut prints = Vec::new();
            for _ in 0..10 {
                let (_, grads) = grad::value_and_grad(trainer.state(), |s: &mut Scope| {
                    let mut h = x.clone();
                    for (i, (w, b)) in layers.iter().enumerate() {
                        h = h.matmul(&s.get(w)?)?.add(&s.get(b)?)?;
                        if i + 1 < layers.len() {
                            h = h.relu()?;
                        }
                    }
                    losses::sparse_categorical_crossentropy(&labels, &h, true)
                })
                .unwrap();
                let next = opt.apply(trainer.state().clone(), &grads).unwrap();
                trainer.commit(next).unwrap();
                prints.push(trainer.state().fingerprint());
            }
            prints
        })
    }

    for (sizes, batch) in [(vec![64, 128, 10], 128), (vec![784, 1024, 1024, 10], 256)] {
        let one = fingerprints(&sizes, batch, 1);
        for threads in [2, 7] {
            assert_eq!(fingerprints(&sizes, batch, threads), one, "{sizes:?} at {threads} threads");
        }
    }
}
