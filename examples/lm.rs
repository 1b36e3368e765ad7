//! Train a character-level language model, a small GPT (token and position embeddings, pre-LayerNorm blocks of
//! causal MultiHeadAttention and a GELU MLP), on Shakespeare's plays with pure steps committed through a
//! `Trainer` into a run directory.
//!
//! AdamW keeps moving averages of the weights (`use_ema`): they are optimizer variables in the store, so they
//! are committed, resumed and replayed with the weights. Validation (the last 10% of the text) is measured on
//! the averages, through `Optimizer::ema_state` (no copy of the model), and printed as bits per character; at
//! the end a sample is generated from the averages with a seeded key.
//!
//! Killed at any point and started again with the same command, the run resumes at its last durable version
//! and ends with the same `head vN fingerprint ...` line as a run never interrupted. A finished run started
//! again prints its result and replays its last evaluation interval (`--replay N`: at least the last N steps;
//! `--replay all`: every step) bit for bit, without training. `--fresh` deletes the run first. The run
//! directory keeps the last two durable states and the state at every evaluation point.
//!
//! `cargo run --release --example lm -- [--run DIR] [--fresh] [--steps N] [--batch B] [--lr X] [--seed S]
//!  [--threads T] [--layers L] [--heads H] [--d-model D] [--context T] [--eval-every N] [--replay N|all]
//!  [--sample N] [--stop-after N]`

#[path = "common/exit.rs"]
mod exit;
#[path = "common/gpt.rs"]
mod gpt;

use std::path::PathBuf;
use std::time::Instant;

use gpt::{Config, StepRecord, Text};
use indicatif::{ProgressBar, ProgressStyle};
use purestate::optim::Optimizer;
use purestate::random::Key;
use purestate::{Durability, Retention, RunOptions, Trainer};

struct Args {
    run: PathBuf,
    fresh: bool,
    steps: u32,
    batch: usize,
    lr: f32,
    seed: u64,
    threads: usize,
    config: Config,
    eval_every: u32,
    /// Replay at least the last N steps (from the evaluation point before); `Some(0)` (`all`) from v0; `None`:
    /// the last evaluation interval.
    replay: Option<u32>,
    sample: usize,
    stop_after: Option<u32>,
}

const USAGE: &str = "usage: lm [--run DIR] [--fresh] [--steps N] [--batch B] [--lr X] [--seed S] [--threads T] \
                     [--layers L] [--heads H] [--d-model D] [--context T] [--eval-every N] [--replay N|all] \
                     [--sample N] [--stop-after N]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        run: PathBuf::from("runs/lm"),
        fresh: false,
        steps: 2000,
        batch: 32,
        lr: 3e-3,
        seed: 0,
        threads: 0,
        config: Config { vocab: 0, context: 64, layers: 4, heads: 4, d_model: 128 },
        eval_every: 250,
        replay: None,
        sample: 400,
        stop_after: None,
    };
    let mut it = std::env::args().skip(1);
    fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        v.parse().map_err(|e| format!("{flag}: {e}"))
    }
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--run" => args.run = PathBuf::from(value()?),
            "--fresh" => args.fresh = true,
            "--steps" => args.steps = num(&flag, value()?)?,
            "--batch" => args.batch = num(&flag, value()?)?,
            "--lr" => args.lr = num(&flag, value()?)?,
            "--seed" => args.seed = num(&flag, value()?)?,
            "--threads" => args.threads = num(&flag, value()?)?,
            "--layers" => args.config.layers = num(&flag, value()?)?,
            "--heads" => args.config.heads = num(&flag, value()?)?,
            "--d-model" => args.config.d_model = num(&flag, value()?)?,
            "--context" => args.config.context = num(&flag, value()?)?,
            "--eval-every" => args.eval_every = num(&flag, value()?)?,
            "--sample" => args.sample = num(&flag, value()?)?,
            "--stop-after" => args.stop_after = Some(num(&flag, value()?)?),
            "--replay" => {
                let v = value()?;
                args.replay = if v == "all" { Some(0) } else { Some(num(&flag, v)?) };
            }
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    if args.batch == 0 || args.steps == 0 || args.eval_every == 0 || args.config.context == 0 {
        return Err("--batch, --steps, --eval-every and --context must be positive".into());
    }
    Ok(args)
}

/// Linear warm-up over the first 100 steps, then a cosine decay to a tenth of the peak at the last step.
fn learning_rate(peak: f32, step: u32, steps: u32) -> f32 {
    let warmup = 100.min(steps / 10).max(1);
    if step < warmup {
        return peak * (step + 1) as f32 / warmup as f32;
    }
    let progress = f64::from(step - warmup) / f64::from((steps - warmup).max(1));
    (f64::from(peak) * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))) as f32
}

/// `n` window starts spread evenly over the held-out text.
fn valid_starts(text: &Text, context: usize, n: usize) -> Vec<u32> {
    let room = text.valid.len() - context - 1;
    (0..n).map(|i| (i * room / n) as u32).collect()
}

fn main() -> std::process::ExitCode {
    exit::exit_code(parse_args().map_err(Into::into).and_then(|args| exit::in_pool(args.threads, || run(args))))
}

fn run(mut args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.fresh && args.run.exists() {
        std::fs::remove_dir_all(&args.run).map_err(|e| format!("{}: {e}", args.run.display()))?;
        println!("--fresh: removed {}", args.run.display());
    }
    let text = Text::load()?;
    args.config.vocab = text.vocab.len();
    let c = args.config;
    println!(
        "shakespeare: {} characters for training, {} held out, {} distinct; GPT {} layers, {} heads, d_model {}, \
         context {}; AdamW peak lr {}, batch {}, {} steps",
        text.train.len(),
        text.valid.len(),
        c.vocab,
        c.layers,
        c.heads,
        c.d_model,
        c.context,
        args.lr,
        args.batch,
        args.steps
    );
    let key = Key::new(args.seed);
    let (state, model, opt) = gpt::build(key, c, 0.99)?;
    let params: usize = model.variables().iter().map(|v| state.get(v).map(|t| t.size()).unwrap_or(0)).sum();
    println!(
        "{params} parameters, {} variables in the state with AdamW's slots and averages; {} threads, {} matrix kernel",
        state.len(),
        rayon::current_num_threads(),
        purestate::kernels::gemm::kernel()
    );

    // A state is 13 MB (weights, AdamW's two slots, the averages): the run directory keeps the last two durable
    // states and every evaluation point's (where a replay starts), not every durable point's.
    let every = u64::from(args.eval_every);
    let options = RunOptions::default()
        .durability(Durability::Batched { versions: Some(50), millis: Some(5000) })
        .store_every(every)
        .disk_retention(Retention::keep_last(2).and_every(every))
        .memory_retention(Retention::keep_last(8).and_every(every));
    let resuming = args.run.join("RUN").exists();
    let mut trainer: Trainer<StepRecord> = if resuming {
        let mut trainer = Trainer::open_run(&args.run, options)?;
        trainer.rebind(&state)?;
        trainer
    } else {
        Trainer::create_run(&args.run, state, options)?
    };
    trainer = trainer.with_nonfinite_guard(true);
    let step_fn = |s: purestate::StateStore, rec: &StepRecord| -> purestate::Result<purestate::StateStore> {
        Ok(gpt::train_step(s, &model, &opt, &text, rec)?.0)
    };
    let eval_starts = valid_starts(&text, c.context, 256);
    let final_starts = valid_starts(&text, c.context, 2048);
    let finish = |trainer: &Trainer<StepRecord>| -> Result<(), Box<dyn std::error::Error>> {
        let averaged = opt.ema_state(trainer.state())?;
        let bpc = model.bits_per_char(&averaged, &text.valid, &final_starts, 64)?;
        let raw = model.bits_per_char(trainer.state(), &text.valid, &final_starts, 64)?;
        println!(
            "validation ({} windows of {}): {bpc:.2} bits per character (moving averages); {raw:.2} with the raw weights",
            final_starts.len(),
            c.context
        );
        println!("head v{} fingerprint {}", trainer.head(), trainer.fingerprint(trainer.head())?);
        // From the evaluation point at or before `head - N` (a state the run directory keeps).
        let from = match args.replay {
            Some(0) => 0,
            Some(n) => trainer.head().saturating_sub(u64::from(n)) / every * every,
            None => trainer.head().saturating_sub(1) / every * every,
        };
        let started = Instant::now();
        let report = trainer.replay(from, trainer.head(), step_fn)?;
        println!("replay: {report} ({:.2?})", started.elapsed());
        if !report.is_bit_identical() {
            return Err("replay diverged".into());
        }
        let prompt = text.encode("\n");
        let sample = model.sample(&averaged, &prompt, args.sample, 0.8, key.fold_in(7))?;
        println!("sample from the moving averages (temperature 0.8, seed {}):\n{}", args.seed, text.decode(&sample));
        Ok(())
    };

    if let Ok(done) = trainer.version_of_tag("done") {
        println!("run {} is finished (tag `done` at v{done}): not training again", args.run.display());
        return finish(&trainer);
    }
    let mut step = match trainer.record(trainer.head())? {
        Some(r) => r.step + 1,
        None => 0,
    };
    if resuming {
        let report = trainer.run_report().cloned().unwrap_or_default();
        println!(
            "resumed at v{} (step {step} of {}) from {}: {report}",
            trainer.head(),
            args.steps,
            args.run.display()
        );
    }
    let mut curve = Curve::default();
    let bar = ProgressBar::new(u64::from(args.steps));
    bar.set_position(u64::from(step));
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("valid template"));
    let started = Instant::now();
    // Time spent evaluating, left out of the per-step figure.
    let mut evaluating = std::time::Duration::ZERO;
    let mut steps_run = 0u32;
    while step < args.steps {
        if args.stop_after == Some(steps_run) {
            trainer.flush()?;
            bar.abandon();
            println!("--stop-after {steps_run}: stopped at v{} (step {step})", trainer.head());
            return Ok(());
        }
        let lr = learning_rate(args.lr, step, args.steps);
        let record = gpt::record(&text, key.fold_in(1), step, args.batch, c.context, lr)?;
        let (next, loss) = gpt::train_step(trainer.state().clone(), &model, &opt, &text, &record)?;
        let version = trainer.commit_with(next, record)?;
        curve.loss.push((version, loss / std::f32::consts::LN_2));
        steps_run += 1;
        step += 1;
        bar.inc(1);
        if step % args.eval_every == 0 || step == args.steps {
            let eval_started = Instant::now();
            let bpc = model.bits_per_char(&opt.ema_state(trainer.state())?, &text.valid, &eval_starts, 64)?;
            curve.valid.push((version, bpc));
            let message = format!(
                "step {step}: train {:.2}, validation {bpc:.2} bits per character",
                loss / std::f32::consts::LN_2
            );
            bar.suspend(|| println!("{message}"));
            bar.set_message(message);
            trainer.tag(format!("step-{step}"))?;
            evaluating += eval_started.elapsed();
        }
    }
    trainer.tag("done")?;
    trainer.flush()?;
    bar.finish();
    let elapsed = started.elapsed();
    println!(
        "trained to v{} ({steps_run} steps run in this process) in {elapsed:.2?}: {:.0} ms per step (the \
         {evaluating:.2?} of validation left out)",
        trainer.head(),
        (elapsed - evaluating).as_secs_f64() * 1e3 / f64::from(steps_run.max(1))
    );
    let svg = args.run.join("lm_curve.svg");
    curve.draw(&svg)?;
    println!("training curve (this process's steps): {}", svg.display());
    finish(&trainer)
}

/// Training loss per committed version and validation bits per character at each evaluation.
#[derive(Default)]
struct Curve {
    loss: Vec<(u64, f32)>,
    valid: Vec<(u64, f64)>,
}

impl Curve {
    fn draw(&self, path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
        use plotters::prelude::*;
        let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let max_v = self.loss.iter().map(|l| l.0).max().unwrap_or(1) as f64;
        let points: Vec<(f64, f64)> =
            self.loss.iter().filter(|l| l.1.is_finite()).map(|&(v, l)| (v as f64, f64::from(l))).collect();
        let hi = points
            .iter()
            .chain(&self.valid.iter().map(|&(v, b)| (v as f64, b)).collect::<Vec<_>>())
            .fold(1.0f64, |m, p| m.max(p.1));
        let mut chart = ChartBuilder::on(&root)
            .margin(20)
            .caption(
                "GPT on Shakespeare: training loss (blue), validation on the averages (green), bits per character",
                ("sans-serif", 16),
            )
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0.0..max_v.max(1.0), 0.0..hi * 1.05)?;
        chart.configure_mesh().x_desc("version").y_desc("bits per character").draw()?;
        chart.draw_series(LineSeries::new(points, &BLUE))?;
        chart.draw_series(LineSeries::new(self.valid.iter().map(|&(v, b)| (v as f64, b)), GREEN.stroke_width(2)))?;
        chart.draw_series(self.valid.iter().map(|&(v, b)| Circle::new((v as f64, b), 3, GREEN.filled())))?;
        root.present()?;
        Ok(())
    }
}
