//! Train a 64-128-10 multilayer perceptron (or, with `--model cnn`, a CNN built from Keras layers: Conv2D,
//! BatchNormalization, pooling, Dropout, Dense) on the digits data set with pure steps, and show what a
//! functional training state buys: every step is committed with the record of what it consumed, a
//! deliberately too-large learning rate is refused by the divergence guard and rolled back, every epoch is
//! tagged and checkpointed, and at the end the whole run is replayed from version 0 bit for bit.
//!
//! The CNN's learning rate follows a cosine decay over the run (each step's rate is in its record). Its
//! BatchNormalization moving statistics and Dropout seed state are variables of the state: the
//! differentiated step returns them, every version holds them, and replay checks them bit for bit.
//!
//! The run is journaled to a run directory (`--run DIR`, default `runs/digits`, `runs/digits-cnn` for the CNN). Killed at any point and
//! started again with the same command, it resumes at the last durable version (`resumed at vN ...`) and ends
//! with the same `head vN fingerprint ...` line as a run never interrupted; a finished run started again
//! prints its result and replays it to verify, without training. `--fresh` deletes the run first.
//!
//! `cargo run --release --example train -- [--model mlp|cnn] [--run DIR] [--fresh] [--epochs N] [--lr X] [--seed S]
//!  [--threads T] [--batch B] [--checkpoint-dir DIR] [--no-blowup]`

#[path = "common/cnn.rs"]
mod cnn;
#[path = "common/digits.rs"]
mod digits;
#[path = "common/mlp.rs"]
mod mlp;

#[path = "common/exit.rs"]
mod exit;
use std::path::PathBuf;
use std::time::Instant;

use digits::{epoch_batches, Digits};
use indicatif::{ProgressBar, ProgressStyle};
use mlp::StepRecord;
use purestate::optim::Adam;
use purestate::random::Key;
use purestate::{CheckpointManager, Durability, Error, Retention, RunOptions, StateStore, Trainer};

/// The model trained: the MLP of `common/mlp.rs` or the CNN of `common/cnn.rs`.
enum Net {
    Mlp(mlp::Mlp),
    Cnn(cnn::Cnn),
}

impl Net {
    fn build(kind: &str, key: Key, lr: f32) -> purestate::Result<(StateStore, Net, Adam)> {
        Ok(match kind {
            "cnn" => {
                let (state, model, opt) = cnn::build(key, lr)?;
                (state, Net::Cnn(model), opt)
            }
            _ => {
                let (state, model, opt) = mlp::build(key, lr)?;
                (state, Net::Mlp(model), opt)
            }
        })
    }

    fn describe(&self) -> &'static str {
        match self {
            Net::Mlp(_) => "digits MLP",
            Net::Cnn(_) => "digits CNN",
        }
    }

    fn train_step(
        &self,
        state: StateStore,
        opt: &Adam,
        data: &Digits,
        rec: &StepRecord,
    ) -> purestate::Result<(StateStore, f32)> {
        match self {
            Net::Mlp(m) => mlp::train_step(state, m, opt, data, rec),
            Net::Cnn(c) => cnn::train_step(state, c, opt, data, rec),
        }
    }

    fn accuracy(&self, state: &StateStore, data: &Digits, ids: &[usize]) -> purestate::Result<f64> {
        match self {
            Net::Mlp(m) => m.accuracy(state, data, ids),
            Net::Cnn(c) => c.accuracy(state, data, ids),
        }
    }
}

struct Args {
    model: String,
    epochs: u32,
    lr: f32,
    seed: u64,
    threads: usize,
    batch: usize,
    run: PathBuf,
    checkpoint_dir: Option<PathBuf>,
    blowup: bool,
    fresh: bool,
}

const USAGE: &str =
    "usage: train [--model mlp|cnn] [--run DIR] [--fresh] [--epochs N] [--lr X] [--seed S] [--threads T] [--batch B] \
                     [--checkpoint-dir DIR] [--no-blowup]";

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args {
        model: "mlp".into(),
        epochs: 15,
        lr: 3e-3,
        seed: 0,
        threads: 0,
        batch: 64,
        run: PathBuf::new(),
        checkpoint_dir: None,
        blowup: true,
        fresh: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--epochs" => args.epochs = value("--epochs")?.parse().map_err(|e| format!("--epochs: {e}"))?,
            "--lr" => args.lr = value("--lr")?.parse().map_err(|e| format!("--lr: {e}"))?,
            "--seed" => args.seed = value("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--threads" => args.threads = value("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--batch" => args.batch = value("--batch")?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--run" => args.run = PathBuf::from(value("--run")?),
            "--model" => args.model = value("--model")?,
            "--checkpoint-dir" => args.checkpoint_dir = Some(PathBuf::from(value("--checkpoint-dir")?)),
            "--no-blowup" => args.blowup = false,
            "--fresh" => args.fresh = true,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    if args.batch == 0 || args.epochs == 0 {
        return Err("--batch and --epochs must be positive".into());
    }
    if args.model != "mlp" && args.model != "cnn" {
        return Err(format!("--model: `{}` is neither mlp nor cnn\n{USAGE}", args.model));
    }
    if args.run.as_os_str().is_empty() {
        args.run = PathBuf::from(if args.model == "cnn" { "runs/digits-cnn" } else { "runs/digits" });
    }
    Ok(args)
}

fn main() -> std::process::ExitCode {
    exit::exit_code(parse_args().map_err(Into::into).and_then(|args| exit::in_pool(args.threads, || run(args))))
}

fn run(args: Args) -> std::result::Result<(), Box<dyn std::error::Error>> {
    if args.fresh && args.run.exists() {
        std::fs::remove_dir_all(&args.run).map_err(|e| format!("{}: {e}", args.run.display()))?;
        println!("--fresh: removed {}", args.run.display());
    }
    let data = Digits::load()?;
    let key = Key::new(args.seed);
    let (train, test) = data.split(key.fold_in(0), 0.2)?;
    println!(
        "digits: {} examples, {} for training, {} held out; {}, Adam lr {}, batch {}, {} epochs",
        data.len(),
        train.len(),
        test.len(),
        if args.model == "cnn" { "CNN (Conv2D, BatchNormalization, pooling, Dropout, Dense)" } else { "MLP 64-128-10" },
        args.lr,
        args.batch,
        args.epochs
    );

    let (state, model, opt) = Net::build(&args.model, key, args.lr)?;
    // The run directory holds the history: memory keeps the head, tags, and some recent and periodic states.
    let options = RunOptions::default()
        .durability(Durability::Batched { versions: Some(25), millis: Some(500) })
        .memory_retention(Retention::keep_last(32).and_every(100));
    let resuming = args.run.join("RUN").exists();
    let mut trainer: Trainer<StepRecord> = if resuming {
        let mut trainer = Trainer::open_run(&args.run, options)?;
        trainer.rebind(&state)?; // the model's and the optimizer's handles work on the reopened states
        trainer
    } else {
        Trainer::create_run(&args.run, state, options)?
    };
    trainer = trainer.with_nonfinite_guard(true);
    let step_fn = |s: purestate::StateStore, rec: &StepRecord| -> purestate::Result<purestate::StateStore> {
        Ok(model.train_step(s, &opt, &data, rec)?.0)
    };

    if let Ok(done) = trainer.version_of_tag("done") {
        println!("run {} is finished (tag `done` at v{done}): not training again", args.run.display());
        let accuracy = model.accuracy(trainer.state(), &data, &test)?;
        println!("held-out accuracy {:.2}%", accuracy * 100.0);
        println!("head v{} fingerprint {}", trainer.head(), trainer.fingerprint(trainer.head())?);
        let replay_start = Instant::now();
        let report = trainer.replay(0, trainer.head(), step_fn)?;
        println!("replay: {report} ({:.2?})", replay_start.elapsed());
        if !report.is_bit_identical() {
            return Err("replay diverged".into());
        }
        return Ok(());
    }

    let checkpoint_dir = args.checkpoint_dir.clone().unwrap_or_else(|| args.run.join("checkpoints"));
    let manager = CheckpointManager::new(&checkpoint_dir, 3, None)?;
    let mut curve = Curve::default();

    let steps_per_epoch = train.len().div_ceil(args.batch) as u64;
    let blowup_epoch = if args.blowup { Some(2.min(args.epochs)) } else { None };
    // Where to resume: the step after the head's, in the head's epoch.
    let (mut epoch, mut start) = match trainer.record(trainer.head())? {
        Some(r) => (r.epoch, r.step as usize + 1),
        None => (1, 0),
    };
    // The blow-up was refused and rolled back if some blow-up step lies off the head's lineage.
    let on_chain: std::collections::HashSet<u64> = trainer.lineage(0, trainer.head())?.into_iter().collect();
    curve.blowup_done = trainer.history().iter().any(|v| {
        !on_chain.contains(&v.version)
            && trainer.record(v.version).ok().flatten().is_some_and(|r| r.learning_rate > 1e30)
    });
    if resuming {
        let report = trainer.run_report().cloned().unwrap_or_default();
        println!(
            "resumed at v{} (epoch {epoch}, step {start} of {steps_per_epoch}) from {}: {report}",
            trainer.head(),
            args.run.display()
        );
    }

    let done_steps = (u64::from(epoch) - 1) * steps_per_epoch + start as u64;
    let bar = ProgressBar::new(steps_per_epoch * u64::from(args.epochs));
    bar.set_position(done_steps.min(steps_per_epoch * u64::from(args.epochs)));
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("valid template"));
    let started = Instant::now();
    let mut steps_run = 0u64;

    while epoch <= args.epochs {
        let blowup = blowup_epoch == Some(epoch) && !curve.blowup_done;
        if blowup && start == 0 {
            trainer.tag("before-blowup")?;
        }
        let batches = epoch_batches(&train, key.fold_in(2), epoch, args.batch)?;
        let mut refused = false;
        for (i, ids) in batches.iter().enumerate().skip(start) {
            // A deliberately absurd learning rate for the first steps of the blow-up epoch.
            // The CNN's rate decays along a cosine to zero over the run (its BatchNorm statistics settle with it).
            let progress = ((u64::from(epoch) - 1) * steps_per_epoch + i as u64) as f64
                / (u64::from(args.epochs) * steps_per_epoch) as f64;
            let scheduled = match model {
                Net::Cnn(_) => (f64::from(args.lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())) as f32,
                Net::Mlp(_) => args.lr,
            };
            let learning_rate = if blowup && i < 5 { 1e35 } else { scheduled };
            let record =
                StepRecord { epoch, step: i as u32, ids: ids.iter().map(|&i| i as u32).collect(), learning_rate };
            let (next, loss) = model.train_step(trainer.state().clone(), &opt, &data, &record)?;
            steps_run += 1;
            match trainer.commit_with(next, record) {
                Ok(version) => curve.loss.push((version, loss)),
                Err(Error::NonFinite { path, base }) => {
                    let good = trainer.version_of_tag("before-blowup")?;
                    let message = format!(
                        "epoch {epoch} step {i}: lr {learning_rate:e} made `{path}` non-finite (state derived from v{}); \
                         refused, rolled back to v{good} (journaled) and resumed with lr {}",
                        base.unwrap_or(0),
                        args.lr
                    );
                    bar.suspend(|| println!("{message}"));
                    curve.refused.push((base.unwrap_or(0), good));
                    trainer.rollback(good)?;
                    curve.blowup_done = true;
                    refused = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
            bar.inc(1);
        }
        start = 0;
        if refused {
            continue; // the same epoch again, from the rolled-back state
        }
        let acc = model.accuracy(trainer.state(), &data, &test)?;
        curve.accuracy.push((trainer.head(), acc));
        let last_loss = match curve.loss.last() {
            Some(&(_, loss)) => format!("loss {loss:.4}"),
            None => "no step run in this process".to_string(), // resumed at the epoch's last step
        };
        let message = format!("epoch {epoch}: {last_loss}, held-out accuracy {:.1}%", acc * 100.0);
        bar.suspend(|| println!("{message}"));
        bar.set_message(message);
        trainer.tag(format!("epoch-{epoch}"))?;
        manager.save(trainer.head(), trainer.state())?;
        epoch += 1;
    }
    trainer.tag("done")?;
    trainer.flush()?;
    bar.finish();
    let elapsed = started.elapsed();

    let accuracy = model.accuracy(trainer.state(), &data, &test)?;
    println!(
        "trained to v{} ({} steps run in this process) in {:.2?}: {:.0} us per step; held-out accuracy {:.2}%",
        trainer.head(),
        steps_run,
        elapsed,
        elapsed.as_secs_f64() * 1e6 / steps_run.max(1) as f64,
        accuracy * 100.0
    );
    println!("head v{} fingerprint {}", trainer.head(), trainer.fingerprint(trainer.head())?);

    let replay_start = Instant::now();
    let report = trainer.replay(0, trainer.head(), step_fn)?;
    println!("replay: {report} ({:.2?})", replay_start.elapsed());

    let steps = manager.all_steps()?;
    println!("checkpoints in {}: versions {:?}", checkpoint_dir.display(), steps);
    let svg = args.run.join("train_curve.svg");
    curve.draw(&svg, model.describe())?;
    println!("training curve (this process's steps): {}", svg.display());
    if !report.is_bit_identical() {
        return Err("replay diverged".into());
    }
    Ok(())
}

/// What the picture shows: loss per committed version, held-out accuracy per epoch, refused steps.
#[derive(Default)]
struct Curve {
    loss: Vec<(u64, f32)>,
    accuracy: Vec<(u64, f64)>,
    refused: Vec<(u64, u64)>,
    blowup_done: bool,
}

impl Curve {
    fn draw(&self, path: &std::path::Path, title: &str) -> std::result::Result<(), Box<dyn std::error::Error>> {
        use plotters::prelude::*;
        let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let max_v = self.loss.iter().map(|l| l.0).max().unwrap_or(1) as f64;
        let finite: Vec<(f64, f64)> = self
            .loss
            .iter()
            .filter(|l| l.1.is_finite())
            .map(|&(v, l)| (v as f64, f64::from(l).max(1e-4).log10()))
            .collect();
        let (lo, hi) = finite.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let mut chart = ChartBuilder::on(&root)
            .margin(20)
            .caption(
                format!("{title}: log10 loss per version (blue), held-out accuracy (green), refused (red)"),
                ("sans-serif", 16),
            )
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0.0..max_v.max(1.0), (lo - 0.1).min(-0.05)..(hi + 0.1).max(0.05))?;
        chart.configure_mesh().x_desc("version").y_desc("log10 loss / accuracy").draw()?;
        chart.draw_series(LineSeries::new(finite.iter().copied(), &BLUE))?;
        chart.draw_series(LineSeries::new(self.accuracy.iter().map(|&(v, a)| (v as f64, a)), GREEN.stroke_width(2)))?;
        chart.draw_series(self.accuracy.iter().map(|&(v, a)| Circle::new((v as f64, a), 3, GREEN.filled())))?;
        for &(at, back_to) in &self.refused {
            chart.draw_series(LineSeries::new([(at as f64, lo - 0.1), (at as f64, hi + 0.1)], RED.stroke_width(2)))?;
            chart.draw_series(LineSeries::new([(at as f64, hi), (back_to as f64, hi)], RED.stroke_width(1)))?;
        }
        root.present()?;
        Ok(())
    }
}
