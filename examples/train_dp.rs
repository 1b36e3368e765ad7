//! Data-parallel training of a small MLP on the digits data (8x8 images, 10 classes) with
//! `purestate::replica::Replicas`, in micro-batches: the bits do not depend on the number of replicas.
//!
//! In process (no MPI needed), N replicas on rayon's threads:
//!
//! ```text
//! cargo run --release --example train_dp -- --replicas 3
//! ```
//!
//! Over MPI (each rank one replica; OpenMPI and libclang installed, see README):
//!
//! ```text
//! cargo build --release --features mpi --example train_dp
//! mpirun -np 2 target/release/examples/train_dp --mpi
//! ```
//!
//! Every global batch (`--batch B`, 60) is cut into micro-batches (`--micro-batch M`, 15) that the replicas share;
//! gradients and metrics add up in one fixed tree over the micro-batches. So `--replicas 1`, `2`, `3`, `4` and
//! `mpirun -np 2`, `-np 3` all print the same `fingerprint <32 hex digits>` last, bit for bit.
//!
//! With `--run DIR` (in process) the history goes to a run directory, and the same command resumes it after a
//! kill, on any number of replicas: `--replicas 2 --stop-after 40`, then `--replicas 3`, ends with the
//! fingerprint of an uninterrupted `--replicas 1` run. The run records the micro-batch size; resuming with
//! another is an error. `--fresh` starts the run directory again.
//!
//! Other options: `--epochs E` (10), `--checkpoint FILE` (rank 0 saves the final state), `--data FILE`
//! (`data/digits.csv.gz`).

#[path = "common/exit.rs"]
mod exit;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::PathBuf;

use flate2::read::GzDecoder;
use purestate::grad;
use purestate::optim::{Adam, Optimizer};
use purestate::random::Key;
use purestate::replica::{MicroBatching, ReplicaContext, ReplicaOutput, Replicas};
use purestate::{checkpoint, init, losses, Error, RunOptions, StateStore, Tensor, Trainer, Variable, VariableSpec};
use serde::{Deserialize, Serialize};

const FEATURES: usize = 64;
const HIDDEN: usize = 32;
const CLASSES: usize = 10;
const TRAIN: usize = 1500;

type BoxResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Options {
    replicas: usize,
    mpi: bool,
    epochs: u32,
    batch: usize,
    micro_batch: usize,
    run: Option<PathBuf>,
    fresh: bool,
    stop_after: Option<u64>,
    checkpoint: Option<PathBuf>,
    data: PathBuf,
}

/// What a committed version did: enough to resume from it (and the micro-batching it was computed with).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StepRecord {
    epoch: u32,
    /// The step in the epoch; `None` for the metric reset that starts an epoch.
    step: Option<u32>,
    micro: MicroBatching,
}

fn options() -> BoxResult<Options> {
    let mut opts = Options {
        replicas: 2,
        mpi: false,
        epochs: 10,
        batch: 60,
        micro_batch: 15,
        run: None,
        fresh: false,
        stop_after: None,
        checkpoint: None,
        data: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv.gz")),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--replicas" => opts.replicas = value()?.parse()?,
            "--mpi" => opts.mpi = true,
            "--epochs" => opts.epochs = value()?.parse()?,
            "--batch" => opts.batch = value()?.parse()?,
            "--micro-batch" => opts.micro_batch = value()?.parse()?,
            "--run" => opts.run = Some(value()?.into()),
            "--fresh" => opts.fresh = true,
            "--stop-after" => opts.stop_after = Some(value()?.parse()?),
            "--checkpoint" => opts.checkpoint = Some(value()?.into()),
            "--data" => opts.data = value()?.into(),
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    Ok(opts)
}

/// The digits: pixels scaled to [0, 1] (row-major, 64 per example) and labels.
struct Digits {
    x: Vec<f32>,
    y: Vec<usize>,
}

impl Digits {
    fn load(path: &PathBuf) -> BoxResult<Digits> {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for line in BufReader::new(GzDecoder::new(file)).lines() {
            let line = line?;
            let fields: Vec<&str> = line.split(',').collect();
            if fields.len() != FEATURES + 1 {
                return Err(format!("{}: a row of {} fields", path.display(), fields.len()).into());
            }
            for f in &fields[..FEATURES] {
                x.push(f.trim().parse::<f32>()? / 16.0);
            }
            y.push(fields[FEATURES].trim().parse()?);
        }
        Ok(Digits { x, y })
    }

    fn len(&self) -> usize {
        self.y.len()
    }

    /// The examples at `rows` as an `(n, 64)` tensor and their labels.
    fn gather(&self, rows: &[usize]) -> purestate::Result<(Tensor, Vec<usize>)> {
        let x = rows.iter().flat_map(|&r| self.x[r * FEATURES..(r + 1) * FEATURES].iter().copied()).collect();
        Ok((Tensor::from_shape_vec([rows.len(), FEATURES], x)?, rows.iter().map(|&r| self.y[r]).collect()))
    }
}

struct Model {
    w1: Variable,
    b1: Variable,
    w2: Variable,
    b2: Variable,
    seen: Variable,
    correct: Variable,
}

impl Model {
    fn create(state: &mut StateStore) -> purestate::Result<Model> {
        let dense = |state: &mut StateStore, name: &str, fan_in: usize, fan_out: usize, seed: u64| {
            let kernel = state.create(
                VariableSpec::new(init::GlorotUniform)
                    .shape([fan_in, fan_out])
                    .name("kernel")
                    .name_scope(name)
                    .seed(Key::new(seed)),
            )?;
            let bias = state.create(VariableSpec::new(init::Zeros).shape([fan_out]).name("bias").name_scope(name))?;
            Ok::<_, Error>((kernel, bias))
        };
        let (w1, b1) = dense(state, "hidden", FEATURES, HIDDEN, 1)?;
        let (w2, b2) = dense(state, "output", HIDDEN, CLASSES, 2)?;
        // Metrics: one count per replica, summed when read (Keras metrics are sum/on_read variables).
        let metric = |state: &mut StateStore, name: &str| {
            state.create(
                VariableSpec::new(init::Zeros)
                    .shape([])
                    .dtype("int64")
                    .name(name)
                    .name_scope("metrics")
                    .trainable(false)
                    .aggregation("sum")
                    .synchronization("on_read"),
            )
        };
        let seen = metric(state, "seen")?;
        let correct = metric(state, "correct")?;
        Ok(Model { w1, b1, w2, b2, seen, correct })
    }

    fn params(&self) -> [Variable; 4] {
        [self.w1.clone(), self.b1.clone(), self.w2.clone(), self.b2.clone()]
    }

    /// tanh(x @ w1 + b1) @ w2 + b2, reading the weights through `read` (a store, or the scope of a gradient).
    fn logits(&self, read: impl Fn(&Variable) -> purestate::Result<Tensor>, x: &Tensor) -> purestate::Result<Tensor> {
        let h = x.matmul(&read(&self.w1)?)?.add(&read(&self.b1)?)?.tanh()?;
        h.matmul(&read(&self.w2)?)?.add(&read(&self.b2)?)
    }

    /// One micro-batch's step: the mean cross-entropy over its examples, its gradient and the metric updates.
    fn step(&self, x: &Tensor, labels: &[usize], mut state: StateStore) -> purestate::Result<ReplicaOutput> {
        let targets = Tensor::from_shape_vec([labels.len()], labels.iter().map(|&c| c as i64).collect())?;
        let mut correct = 0;
        let (loss, grads) = grad::value_and_grad(&state, |scope| {
            let logits = self.logits(|v| scope.get(v), x)?;
            correct = count_correct(&grad::stop_gradient(&logits), labels)?;
            losses::sparse_categorical_crossentropy(&targets, &logits, true)
        })?;
        state.assign_add(&self.seen, Tensor::scalar(labels.len() as i64))?;
        state.assign_add(&self.correct, Tensor::scalar(correct as i64))?;
        Ok(ReplicaOutput { state, grads, loss: loss.to_f64()? as f32 })
    }

    fn accuracy(&self, state: &StateStore, data: &Digits, rows: Range<usize>) -> purestate::Result<f64> {
        let rows: Vec<usize> = rows.collect();
        let (x, labels) = data.gather(&rows)?;
        let correct = count_correct(&self.logits(|v| state.get(v), &x)?, &labels)?;
        Ok(correct as f64 / labels.len() as f64)
    }
}

/// How many rows of `(n, CLASSES)` logits have their largest value at the label.
fn count_correct(logits: &Tensor, labels: &[usize]) -> purestate::Result<usize> {
    let logits = logits.to_vec::<f32>()?;
    Ok(labels.iter().enumerate().filter(|&(i, &c)| argmax(&logits[i * CLASSES..(i + 1) * CLASSES]) == c).count())
}

fn argmax(xs: &[f32]) -> usize {
    xs.iter().enumerate().fold(0, |best, (i, &x)| if x > xs[best] { i } else { best })
}

fn runner(opts: &Options) -> BoxResult<Replicas> {
    let replicas = if opts.mpi {
        if opts.run.is_some() {
            return Err("--run keeps its history in process: use --replicas N (or --checkpoint under MPI)".into());
        }
        #[cfg(feature = "mpi")]
        {
            Replicas::mpi()?
        }
        #[cfg(not(feature = "mpi"))]
        return Err("--mpi needs a build with `--features mpi`".into());
    } else {
        Replicas::in_process(opts.replicas)?
    };
    // The last batch of an epoch may end with a shorter micro-batch (weighted by its length).
    Ok(replicas.micro_batch(opts.micro_batch)?.allow_partial_micro_batch(true))
}

fn main() -> std::process::ExitCode {
    exit::exit_code(run())
}

fn run() -> BoxResult<()> {
    let opts = options()?;
    let replicas = runner(&opts)?;
    let micro = replicas.micro_batching().ok_or("the runner has a micro-batch size")?;
    let data = Digits::load(&opts.data)?;
    if data.len() <= TRAIN {
        return Err(format!("{}: {} examples, expected more than {TRAIN}", opts.data.display(), data.len()).into());
    }
    let mut state = StateStore::new();
    let model = Model::create(&mut state)?;
    let mut opt = Adam::new(1e-2);
    opt.build(&mut state, &model.params())?;
    let steps_per_epoch = TRAIN.div_ceil(opts.batch) as u32;
    // Every rank keeps the same history; rank 0 alone prints and writes the checkpoint.
    let primary = replicas.is_primary();
    let mut trainer: Trainer<StepRecord> = match &opts.run {
        Some(dir) => {
            if opts.fresh && dir.exists() {
                std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            if dir.join("RUN").exists() {
                let mut trainer = Trainer::open_run(dir, RunOptions::default())?;
                trainer.rebind(&state)?;
                trainer
            } else {
                Trainer::create_run(dir, state, RunOptions::default())?
            }
        }
        None => Trainer::new(state),
    };
    // Where to resume: after the head's step, with the micro-batch size it was computed with.
    let (mut epoch, mut start) = match trainer.record(trainer.head())? {
        Some(rec) => {
            replicas.check_micro_batch(rec.micro.size)?;
            match rec.step {
                None => (rec.epoch, 0),
                Some(i) if i + 1 < steps_per_epoch => (rec.epoch, i + 1),
                Some(_) => (rec.epoch + 1, u32::MAX),
            }
        }
        None => (0, u32::MAX),
    };
    if primary {
        println!(
            "{} replicas ({}), {} epochs, global batch {} in micro-batches of {}",
            replicas.num_replicas(),
            replicas.backend(),
            opts.epochs,
            opts.batch,
            micro.size
        );
        if trainer.head() > 0 {
            let dir = opts.run.as_ref().map(|d| d.display().to_string()).unwrap_or_default();
            println!("resumed {dir} at v{} (epoch {epoch}, step {})", trainer.head(), start.min(steps_per_epoch));
        }
    }
    let started = std::time::Instant::now();
    let mut steps_run = 0u64;
    let mut most_sent = 0;
    while epoch < opts.epochs {
        // A fixed shuffle per epoch: every rank computes the same order.
        let order: Vec<usize> = (0..TRAIN).map(|i| (i * 7919 + epoch as usize * 131) % TRAIN).collect();
        if start == u32::MAX {
            // Reset the metrics: a version like any other; the replicas restart their counts from it.
            let mut reset = trainer.state().clone();
            reset.assign(&model.seen, Tensor::scalar(0i64))?;
            reset.assign(&model.correct, Tensor::scalar(0i64))?;
            trainer.commit_with(reset, StepRecord { epoch, step: None, micro })?;
            start = 0;
        }
        let mut loss_sum = 0.0f64;
        let mut batches = 0;
        for (i, rows) in order.chunks(opts.batch).enumerate().skip(start as usize) {
            if opts.stop_after.is_some_and(|n| steps_run >= n) {
                trainer.flush()?;
                if primary {
                    println!("stopped after {steps_run} steps at v{} (--stop-after)", trainer.head());
                }
                return Ok(());
            }
            let out = replicas.step(trainer.state(), rows.len(), |ctx: &ReplicaContext, s| {
                let (x, labels) = data.gather(&rows[ctx.range()])?;
                model.step(&x, &labels, s)
            })?;
            loss_sum += f64::from(out.loss);
            batches += 1;
            most_sent = most_sent.max(out.sent_bytes.unwrap_or(0));
            let next = opt.apply(out.state, &out.grads)?;
            trainer.commit_with(next, StepRecord { epoch, step: Some(i as u32), micro })?;
            steps_run += 1;
        }
        let fingerprint = replicas.verify_fingerprint(trainer.state())?;
        if primary {
            let state = trainer.state();
            let seen = state.get(&model.seen)?.to_i64()?;
            let correct = state.get(&model.correct)?.to_i64()?;
            println!(
                "epoch {epoch}: loss {:.4}, train accuracy {:.3} ({correct}/{seen} counted once each), test accuracy {:.3}, state {fingerprint}",
                loss_sum / batches.max(1) as f64,
                correct as f64 / seen.max(1) as f64,
                model.accuracy(state, &data, TRAIN..data.len())?,
            );
        }
        epoch += 1;
        start = u32::MAX;
    }
    trainer.flush()?;
    let fingerprint = replicas.verify_fingerprint(trainer.state())?;
    if primary {
        if let Some(path) = &opts.checkpoint {
            checkpoint::save(trainer.state(), path)?;
            println!("saved {}", path.display());
        }
        println!("version {}, {:.2} s", trainer.head(), started.elapsed().as_secs_f64());
        if most_sent > 0 {
            let gradient: usize = model.params().iter().map(|v| v.shape().size() * 4).sum();
            println!("mpi: rank 0 sent at most {most_sent} bytes in a step; one gradient is {gradient} bytes");
        }
        println!("fingerprint {fingerprint}");
    }
    Ok(())
}
