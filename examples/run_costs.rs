//! What a run directory costs, beside an in-memory trainer measured in the same process (issue 14's targets):
//!
//! 1. commit overhead with batched durability at 100 variables (target: <= 20 us per commit);
//! 2. the 784-1024-1024-10 MLP step (Adam, batch 256) with the head's full state stored every 10 versions by
//!    the background writer, over the same step with an in-memory trainer (target: <= 1.10x);
//! 3. a fine-tune with 90% of the parameters frozen, every version's state stored for 50 versions: bytes on
//!    disk over (frozen bytes once + changed bytes per version) (target: <= 1.15x), and full copies;
//! 4. `open_run` of a 100,000-entry journal (target: < 0.5 s).
//!
//! `cargo run --release --example run_costs [-- [--only commit|mlp|bytes|open] [DIR]]` (DIR: scratch directory,
//! default a temporary one; put it on the disk you train on: fsync speed is the disk's; `--only` measures one
//! figure).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use purestate::optim::{Adam, Optimizer};
use purestate::trainer::run;
use purestate::{
    grad, init, losses, DType, Durability, Result, Retention, RunOptions, Scope, StateStore, Tensor, Trainer, Variable,
    VariableSpec,
};

fn batched(versions: u64) -> RunOptions {
    RunOptions::default().durability(Durability::Batched { versions: Some(versions), millis: None })
}

fn commit_overhead(dir: &Path) -> Result<()> {
    let mut state = StateStore::new();
    let vars: Vec<Variable> = (0..100)
        .map(|i| state.create(VariableSpec::new(Tensor::from(vec![i as f32; 16])).name(format!("v{i}"))))
        .collect::<Result<_>>()?;
    let one = Tensor::from(1.0f32);
    let steps = 5000u64;
    let run_step = |trainer: &mut Trainer<u64>| -> Result<Duration> {
        let start = Instant::now();
        for k in 0..steps {
            let mut next = trainer.state().clone();
            for v in &vars {
                next.assign_add(v, one.clone())?;
            }
            trainer.commit_with(next, k)?;
        }
        Ok(start.elapsed())
    };
    let mut memory: Trainer<u64> = Trainer::new(state.clone()).with_retention(Retention::keep_last(4));
    // Journal only: entries become durable every 1000 versions (the head's small state stored then, by the
    // background writer).
    let mut journaled: Trainer<u64> = Trainer::create_run(dir.join("commit"), state.clone(), batched(1000))?;
    // The same with no durable point inside the timed loop: what the `commit` call itself costs.
    let unbatched = RunOptions::default().durability(Durability::Batched { versions: None, millis: None });
    let mut buffered: Trainer<u64> = Trainer::create_run(dir.join("commit-buffered"), state, unbatched)?;
    // Best of 3 rounds, alternating, against the noise of a shared machine.
    let (mut base, mut with_run, mut alone, mut flush) = (Duration::MAX, Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        base = base.min(run_step(&mut memory)?);
        with_run = with_run.min(run_step(&mut journaled)?);
        journaled.flush()?;
        alone = alone.min(run_step(&mut buffered)?);
        let start = Instant::now();
        buffered.flush()?;
        flush = flush.min(start.elapsed());
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / steps as f64;
    println!(
        "1. commit, 100 variables changed per step (best of 3 x {steps}): in memory {:.2} us/step, journaled \
         (batched, 1000) {:.2} us/step: overhead {:.2} us per commit (target <= 20); the commit call alone (no \
         durable point in the loop) {:.2} us/step: {:.2} us, then flush {:.1} ms",
        per(base),
        per(with_run),
        per(with_run) - per(base),
        per(alone),
        per(alone) - per(base),
        flush.as_secs_f64() * 1e3
    );
    Ok(())
}

struct Mlp {
    layers: Vec<(Variable, Variable)>,
    opt: Adam,
    x: Tensor,
    labels: Tensor,
}

fn build(sizes: &[usize], batch: usize) -> Result<(StateStore, Mlp)> {
    let mut state = StateStore::new();
    let mut layers = Vec::new();
    for (i, pair) in sizes.windows(2).enumerate() {
        let w = VariableSpec::new(init::GlorotUniform).shape([pair[0], pair[1]]).name(format!("w{i}"));
        let b = VariableSpec::new(init::Zeros).shape([pair[1]]).name(format!("b{i}"));
        layers.push((state.create(w)?, state.create(b)?));
    }
    let mut opt = Adam::new(1e-3);
    let vars: Vec<Variable> = layers.iter().flat_map(|(w, b)| [w.clone(), b.clone()]).collect();
    opt.build(&mut state, &vars)?;
    let n_in = sizes[0];
    let x = Tensor::from_fn([batch, n_in], DType::Float32, |i| ((i * 7 + i / n_in) % 17) as f64 / 16.0);
    let classes = *sizes.last().expect("sizes");
    let labels: Vec<i32> = (0..batch).map(|i| (i * 3 % classes) as i32).collect();
    Ok((state, Mlp { layers, opt, x, labels: Tensor::from(labels) }))
}

fn mlp_step(state: StateStore, m: &Mlp) -> Result<StateStore> {
    let (_, grads) = grad::value_and_grad(&state, |s: &mut Scope| {
        let mut h = m.x.clone();
        for (i, (w, b)) in m.layers.iter().enumerate() {
            h = h.matmul(&s.get(w)?)?.add(&s.get(b)?)?;
            if i + 1 < m.layers.len() {
                h = h.relu()?;
            }
        }
        losses::sparse_categorical_crossentropy(&m.labels, &h, true)
    })?;
    m.opt.apply(state, &grads)
}

fn mlp_overhead(dir: &Path) -> Result<()> {
    let (state, m) = build(&[784, 1024, 1024, 10], 256)?;
    let steps = 50u64;
    let run_steps = |trainer: &mut Trainer<u64>| -> Result<Duration> {
        let start = Instant::now();
        for _ in 0..steps {
            let k = trainer.head();
            let next = mlp_step(trainer.state().clone(), &m)?;
            trainer.commit_with(next, k)?;
        }
        trainer.flush()?;
        Ok(start.elapsed())
    };
    // Both trainers keep the same in-memory retention; both are warmed up (buffer pool, page faults, and for the
    // run its first stored states) before the rounds, which alternate so that both see the same machine.
    let retention = Retention::keep_last(4);
    let mut memory: Trainer<u64> = Trainer::new(state.clone()).with_retention(retention);
    let mut journaled: Trainer<u64> =
        Trainer::create_run(dir.join("mlp"), state, batched(10).store_every(10).memory_retention(retention))?;
    run_steps(&mut memory)?;
    run_steps(&mut journaled)?;
    let per = |d: Duration| d.as_secs_f64() * 1e3 / steps as f64;
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let base = run_steps(&mut memory)?;
        let with_run = run_steps(&mut journaled)?;
        rounds.push((with_run.as_secs_f64() / base.as_secs_f64(), per(base), per(with_run)));
    }
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ratio, base, with_run) = rounds[rounds.len() / 2];
    println!(
        "2. 784-1024-1024-10 MLP step, batch 256 (median of 5 interleaved rounds of {steps} steps): in memory \
         {base:.2} ms, full state stored every 10 versions {with_run:.2} ms: {ratio:.3}x (target <= 1.10); \
         rounds {:?}",
        rounds.iter().map(|r| format!("{:.3}", r.0)).collect::<Vec<_>>()
    );
    Ok(())
}

fn fine_tune_bytes(dir: &Path) -> Result<()> {
    let mut state = StateStore::new();
    for i in 0..9 {
        state.create(
            VariableSpec::new(init::RandomNormal::default())
                .shape([100_000])
                .name(format!("frozen{i}"))
                .trainable(false),
        )?;
    }
    let head = state.create(VariableSpec::new(init::Zeros).shape([100_000]).name("head"))?;
    let path = dir.join("finetune");
    let mut trainer: Trainer<u64> = Trainer::create_run(&path, state, batched(1).store_every(1))?;
    for k in 1..=50u64 {
        let mut next = trainer.state().clone();
        next.assign_add(&head, Tensor::from(k as f32))?;
        trainer.commit_with(next, k)?;
    }
    trainer.flush()?;
    drop(trainer);
    let s = run::summary(&path)?;
    let value_bytes = 100_000u64 * 4;
    let ideal = 9 * value_bytes + 51 * value_bytes; // frozen once + the changed variable of v0..v50
    println!(
        "3. fine-tune, 90% frozen, 51 stored states: objects {} bytes + journal {} bytes = {:.3}x of frozen-once + \
         changed-per-version ({ideal} bytes) (target <= 1.15); full copies would take {} bytes ({:.1}x)",
        s.object_bytes,
        s.journal_bytes,
        (s.object_bytes + s.journal_bytes) as f64 / ideal as f64,
        s.full_copy_bytes,
        s.full_copy_bytes as f64 / (s.object_bytes + s.journal_bytes) as f64
    );
    Ok(())
}

fn open_time(dir: &Path) -> Result<()> {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Zeros).shape([4]).name("w"))?;
    let path = dir.join("long");
    let mut trainer: Trainer<u64> = Trainer::create_run(&path, state, batched(10_000))?;
    for k in 1..100_000u64 {
        let mut next = trainer.state().clone();
        next.assign_add(&w, Tensor::from(1.0f32))?;
        trainer.commit_with(next, k)?;
    }
    trainer.flush()?;
    drop(trainer);
    let entries = run::summary(&path)?.versions;
    let start = Instant::now();
    let reopened: Trainer<u64> = Trainer::open_run(&path, RunOptions::default())?;
    let took = start.elapsed();
    println!(
        "4. open_run of a journal of {} entries ({} versions): {:.3} s (target < 0.5)",
        reopened.run_report().map_or(0, |r| r.entries),
        entries,
        took.as_secs_f64()
    );
    Ok(())
}

/// One figure of this example, measured in a scratch directory.
type Figure = fn(&Path) -> Result<()>;

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let mut only = None;
    let mut base = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--only" => only = args.next(),
            _ => base = Some(PathBuf::from(arg)),
        }
    }
    let figures: [(&str, Figure); 4] =
        [("commit", commit_overhead), ("mlp", mlp_overhead), ("bytes", fine_tune_bytes), ("open", open_time)];
    if let Some(name) = &only {
        if !figures.iter().any(|(n, _)| n == name) {
            return Err(format!("--only {name}: expected one of commit, mlp, bytes, open").into());
        }
    }
    let scratch = tempfile_dir(base)?;
    for (name, figure) in figures {
        if only.as_deref().is_none_or(|o| o == name) {
            figure(&scratch)?;
        }
    }
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}

fn tempfile_dir(base: Option<PathBuf>) -> std::io::Result<PathBuf> {
    let base = base.unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("purestate-run-costs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
