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
