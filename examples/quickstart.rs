//! Quickstart: create variables, take a snapshot, assign, commit, roll back, and print the history and a diff.
//!
//! `cargo run --example quickstart`

use purestate::{init, StateStore, Tensor, Trainer, VariableSpec};

fn main() -> purestate::Result<()> {
    let mut state = StateStore::new();
    let kernel = state.create(VariableSpec::new(init::Ones).shape([2, 3]).name("kernel").name_scope("dense"))?;
    let bias = state.create(VariableSpec::new(init::Zeros).shape([3]).name("bias").name_scope("dense"))?;
    let steps = state.create(VariableSpec::new(Tensor::from(0i64)).name("steps").trainable(false))?;
    println!("{}", state.repr(&kernel)?);

    let mut trainer: Trainer = Trainer::new(state);
    let snapshot = trainer.state().clone(); // O(1): shares every buffer

    // A "step": a pure function of the snapshot that returns the next state.
    let step = |mut s: purestate::StateStore, lr: f32| -> purestate::Result<purestate::StateStore> {
        s.assign_sub(&kernel, Tensor::from(lr))?;
        s.assign_add(&bias, Tensor::from([0.1f32, 0.2, 0.3]))?;
        s.assign_add(&steps, Tensor::from(1i64))?;
        Ok(s)
    };

    let v1 = trainer.commit(step(trainer.state().clone(), 0.5)?)?;
    trainer.tag("good")?;
    let v2 = trainer.commit(step(trainer.state().clone(), 100.0)?)?; // a bad step
    println!("after v{v2}: {}", trainer.state().repr(&kernel)?);

    trainer.rollback(trainer.version_of_tag("good")?)?;
    println!("rolled back to v{}: {}", trainer.head(), trainer.state().repr(&kernel)?);
    let v3 = trainer.commit(step(trainer.state().clone(), 0.25)?)?;

    println!("\nhistory:");
    for info in trainer.history() {
        let parent = info.parent.map_or("-".to_string(), |p| p.to_string());
        println!("  v{} parent={parent} fingerprint={} tags={:?}", info.version, info.fingerprint, info.tags);
    }
    println!("\ndiff v{v1} -> v{v3}:\n{}", trainer.diff(v1, v3)?);
    println!("the snapshot taken at v0 is untouched: {}", snapshot.repr(&kernel)?);
    Ok(())
}
