//! Hyper-parameter search by branching: train one snapshot for an epoch, freeze the first layer, then branch
//! the same snapshot into several learning rates, train each branch for a few epochs, keep the best branch
//! and drop the others. Branches share every buffer they do not change: the frozen layer is never copied.
//!
//! `cargo run --release --example rollback_search`

#[path = "common/digits.rs"]
mod digits;
#[path = "common/mlp.rs"]
mod mlp;

use digits::{epoch_batches, Digits};
use mlp::{train_step, StepRecord};
use purestate::random::Key;
use purestate::{StateStore, Trainer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = Digits::load()?;
    let key = Key::new(7);
    let (train, test) = data.split(key.fold_in(0), 0.2)?;
    let (state, model, opt) = mlp::build(key, 3e-3)?;
    let mut trainer: Trainer<StepRecord> = Trainer::new(state);

    let run_epochs = |mut state: StateStore, lr: f32, epochs: std::ops::Range<u32>| -> purestate::Result<StateStore> {
        let opt = opt.clone().allow_missing_gradients(true);
        for epoch in epochs {
            for (i, ids) in epoch_batches(&train, key.fold_in(2), epoch, 64)?.into_iter().enumerate() {
                let record = StepRecord {
                    epoch,
                    step: i as u32,
                    ids: ids.iter().map(|&i| i as u32).collect(),
                    learning_rate: lr,
                };
                state = train_step(state, &model, &opt, &data, &record)?.0;
            }
        }
        Ok(state)
    };

    // Warm up, then freeze the first layer (a new version, like any other change).
    let warm = run_epochs(trainer.state().clone(), 3e-3, 1..2)?;
    let mut frozen = warm;
    frozen.set_trainable(&model.w1, false)?;
    frozen.set_trainable(&model.b1, false)?;
    let base = trainer.commit(frozen)?;
    trainer.tag("branch-point")?;
    println!(
        "v{base}: warmed up one epoch, first layer frozen; held-out accuracy {:.2}%",
        model.accuracy(trainer.state(), &data, &test)? * 100.0
    );

    let snapshot = trainer.state().clone();
    let mut results = Vec::new();
    for lr in [3e-4f32, 1e-3, 3e-3, 1e-2] {
        let branch = run_epochs(snapshot.clone(), lr, 2..5)?;
        let acc = model.accuracy(&branch, &data, &test)?;
        let (mut shared, mut copied) = (0usize, 0usize);
        for (var, value) in branch.iter() {
            let before = snapshot.get(var)?;
            if value.ptr_eq(&before) {
                shared += value.nbytes()
            } else {
                copied += value.nbytes()
            }
        }
        println!(
            "lr {lr:<7} -> held-out accuracy {:.2}%; {shared} bytes shared with the branch point (frozen layer: {}), {copied} bytes new",
            acc * 100.0,
            if branch.get(&model.w1)?.ptr_eq(&snapshot.get(&model.w1)?) { "not copied" } else { "COPIED" },
        );
        results.push((acc, lr, branch));
    }
    results.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (best_acc, best_lr, best) = results.swap_remove(0);
    drop(results); // the other branches: their new buffers are freed, nothing else was ever copied
    let v = trainer.commit(best)?;
    trainer.tag("best")?;
    println!("kept lr {best_lr} as v{v} (held-out accuracy {:.2}%); the other branches were dropped", best_acc * 100.0);
    println!("diff branch-point -> best:\n{}", trainer.diff(base, v)?);
    Ok(())
}
