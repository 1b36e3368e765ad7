//! One training step (forward, backward, Adam) of an MLP with the tape (`grad::value_and_grad`) beside the same
//! step with hand-written gradients, measured in the same run: the 64-128-10 MLP on a batch of 128 and the
//! 784-1024-1024-10 MLP on a batch of 256, relu hidden layers, softmax cross-entropy from logits.
//!
//! Each step runs at 1 and at 2 rayon threads (its own `ThreadPool`, the iteration inside `pool.install`); the
//! benchmark ids say the threads: `step/<mlp>/<variant>/<n>t`. The variants:
//! - `tape`: the taped step and `Adam::apply` on a state the bench owns, so buffers are updated in place after
//!   the first iteration. This is the step tools/peer_step.py compares with JAX's jitted step.
//! - `tape_committed`: the same step as users run it: the state comes from a `Trainer` with
//!   `Retention::keep_last(2)` whose head still holds every buffer, and each new state is committed.
//! - `hand_written`: the same forward ops and `Adam::apply` on an owned state, with hand-written gradients;
//!   `tape / hand_written` is the tape's overhead (goal: <= 1.15 at the wide size).
//!
//! `step/cnn-8x8-32-64/{tape,tape_committed}/<n>t` is the digits CNN of `examples/common/cnn.rs` built from
//! `purestate::layers` (conv 3x3 to 32 channels, BatchNormalization, ReLU, 2x2 max pool, conv 3x3 to 64,
//! BatchNormalization, ReLU, global average pool, Dropout 0.25, Dense 10) on 128 8x8x1 images: the step
//! returns the moving statistics and the dropout seed with the gradients (`grad::value_and_grad_aux`), as
//! tools/jax_step.py's jitted CNN step returns its BatchNorm state.
//!
//! `layer_norm/32x64x128/{fused,composed}/<n>t` is one layer normalization forward and backward (x, gamma and
//! beta watched, the loss `sum(y * w)`) over the lm example's activations, 32 sequences of 64 positions of 128
//! features: `ops::layer_norm` beside the same formula composed from operators (`moments`, then
//! `x * inv + (-mean * inv + beta)`), in the same run.
//!
//! Inputs are a fixed digits-like batch (pixel values 0..16 scaled by 1/16, labels 0..9): the arithmetic, not
//! the data, sets the time.
//!
//! Run: `cargo bench --bench grad -- --warm-up-time 1 --measurement-time 5`; beside JAX:
//! `python3 tools/peer_step.py`.
//!
//! Measured on the shared 2-core reference machine before the thread split (rayon's global pool, 2 threads;
//! median of criterion's estimate):
//!
//! | step | tape | hand-written | ratio |
//! | --- | --- | --- | --- |
//! | 64-128-10, batch 128 | 252 us | 286 us | 0.88 |
//! | 784-1024-1024-10, batch 256 | 41.9 ms | 42.7 ms | 0.98 |
//!
//! The tape is no slower: both steps spend their time in the same matrix products, and the fused
//! cross-entropy backward does fewer passes than the hand-written `softmax - onehot`.

#[path = "common/mlp.rs"]
mod mlp;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use mlp::{build, Mlp};
use purestate::grad::{self, Grads};
use purestate::layers::{
    Activation, BatchNormalization, Conv2D, Dense, Dropout, GlobalAveragePooling2D, Layer, MaxPooling2D, Sequential,
};
use purestate::ops::where_;
use purestate::ops::Padding;
use purestate::optim::{Adam, Optimizer};
use purestate::{losses, DType, Result, Retention, Scope, StateStore, Tensor, Trainer};
use rayon::{ThreadPool, ThreadPoolBuilder};

fn taped_step(state: StateStore, m: &Mlp) -> Result<StateStore> {
    let (_, grads) = grad::value_and_grad(&state, |s: &mut Scope| {
        losses::sparse_categorical_crossentropy(&m.labels, &m.logits(s, &m.x)?, true)
    })?;
    m.opt.apply(state, &grads)
}

fn hand_written_step(state: StateStore, m: &Mlp) -> Result<StateStore> {
    // Forward, keeping each layer's input and pre-activation.
    let mut inputs = Vec::new();
    let mut pre = Vec::new();
    let mut h = m.x.clone();
    for (i, (w, b)) in m.layers.iter().enumerate() {
        inputs.push(h.clone());
        let z = h.matmul(&state.get(w)?)?.add(&state.get(b)?)?;
        h = if i + 1 < m.layers.len() { z.relu()? } else { z.clone() };
        pre.push(z);
    }
    let batch = m.x.dims()[0] as f64;
    // d loss / d logits = (softmax - onehot) / batch.
    let mut g = h.softmax(-1)?.sub(&m.onehot)?.div(batch)?;
    let mut pairs = Vec::new();
    for (i, (w, b)) in m.layers.iter().enumerate().rev() {
        if i + 1 < m.layers.len() {
            g = where_(&pre[i].greater(0.0)?, &g, 0.0, DType::Float32)?;
        }
        pairs.push((w.clone(), inputs[i].transpose().matmul(&g)?));
        pairs.push((b.clone(), g.sum(0, false)?));
        if i > 0 {
            g = g.matmul(&state.get(w)?.transpose())?;
        }
    }
    drop((inputs, pre, h));
    m.opt.apply(state, &Grads::from_pairs(pairs)?)
}

/// The digits CNN, its optimizer and a fixed batch of 128 images (the pixel and label formulas of [`build`]).
struct Cnn {
    model: Sequential,
    opt: Adam,
    x: Tensor,
    labels: Tensor,
}

fn build_cnn(batch: usize) -> (StateStore, Cnn) {
    let mut state = StateStore::new();
    let mut model = Sequential::new("cnn")
        .add(Conv2D::new(32, [3, 3]).padding(Padding::Same))
        .add(BatchNormalization::new())
        .add(Activation::new("relu"))
        .add(MaxPooling2D::new([2, 2]))
        .add(Conv2D::new(64, [3, 3]).padding(Padding::Same))
        .add(BatchNormalization::new())
        .add(Activation::new("relu"))
        .add(GlobalAveragePooling2D::new())
        .add(Dropout::new(0.25).seed(0))
        .add(Dense::new(10));
    model.build(&mut state, &[8, 8, 1]).unwrap();
    let mut opt = Adam::new(1e-3);
    opt.build(&mut state, &model.trainable_weights()).unwrap();
    let n_in = 64;
    let x = Tensor::from_fn([batch, 8, 8, 1], DType::Float32, |i| ((i * 7 + i / n_in) % 17) as f64 / 16.0);
    let labels: Vec<i32> = (0..batch).map(|i| (i * 3 % 10) as i32).collect();
    (state, Cnn { model, opt, x, labels: Tensor::from(labels) })
}

fn cnn_step(state: StateStore, m: &Cnn) -> Result<StateStore> {
    let out = grad::value_and_grad_aux(state, |s| {
        let logits = m.model.call(s, &m.x, true)?;
        Ok((losses::sparse_categorical_crossentropy(&m.labels, &logits, true)?, ()))
    })?;
    m.opt.apply(out.state, &out.grads)
}

/// The rayon thread counts every step is measured at (the 2-core reference machine).
const THREADS: [usize; 2] = [1, 2];

fn bench(c: &mut Criterion) {
    let pools: Vec<(usize, ThreadPool)> =
        THREADS.iter().map(|&n| (n, ThreadPoolBuilder::new().num_threads(n).build().unwrap())).collect();
    for (sizes, batch) in [(vec![64, 128, 10], 128), (vec![784, 1024, 1024, 10], 256)] {
        let name = sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("-");
        let mut g = c.benchmark_group(format!("step/{name}"));
        let (state, m) = build(&sizes, batch);
        if batch > 128 {
            // Tens of milliseconds a step: equal-size samples keep a short measurement time meaningful.
            g.sample_size(20).sampling_mode(SamplingMode::Flat);
        }
        for (n, pool) in &pools {
            let threads = format!("{n}t");
            bench_owned(&mut g, "tape", &threads, pool, &state, |s| taped_step(s, &m));
            bench_committed(&mut g, &threads, pool, &state, |s| taped_step(s, &m));
            bench_owned(&mut g, "hand_written", &threads, pool, &state, |s| hand_written_step(s, &m));
        }
        g.finish();
    }
    let mut g = c.benchmark_group("layer_norm/32x64x128");
    let dims = [32usize, 64, 128];
    let x = Tensor::from_fn(dims.as_slice(), DType::Float32, |i| ((i * 7919) % 1013) as f64 / 500.0 - 1.0);
    let gamma = Tensor::from_fn([128].as_slice(), DType::Float32, |i| 0.5 + i as f64 / 128.0);
    let beta = Tensor::from_fn([128].as_slice(), DType::Float32, |i| i as f64 / 256.0 - 0.25);
    let w = Tensor::from_fn(dims.as_slice(), DType::Float32, |i| ((i * 31) % 17) as f64 / 8.0 - 1.0);
    for (n, pool) in &pools {
        for fused in [true, false] {
            let id = BenchmarkId::new(if fused { "fused" } else { "composed" }, format!("{n}t"));
            g.bench_function(id, |b| {
                pool.install(|| {
                    b.iter(|| {
                        let out = grad::ValueAndGrad::new()
                            .call(StateStore::new(), |s| {
                                let (x, g, b) = (s.watch(&x)?, s.watch(&gamma)?, s.watch(&beta)?);
                                let y = if fused {
                                    purestate::ops::layer_norm(&x, Some(&g), Some(&b), 1e-3)?
                                } else {
                                    composed_layer_norm(&x, &g, &b)?
                                };
                                y.mul(&w)?.sum(purestate::ops::Axes::All, false)
                            })
                            .unwrap();
                        black_box(out.inputs)
                    })
                })
            });
        }
    }
    g.finish();
    let mut g = c.benchmark_group("step/cnn-8x8-32-64");
    let (state, m) = build_cnn(128);
    for (n, pool) in &pools {
        let threads = format!("{n}t");
        bench_owned(&mut g, "tape", &threads, pool, &state, |s| cnn_step(s, &m));
        bench_committed(&mut g, &threads, pool, &state, |s| cnn_step(s, &m));
    }
    g.finish();
}

/// Keras's layer normalization over the last axis composed from operators (what `LayerNormalization` ran before
/// `ops::layer_norm`).
fn composed_layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Tensor> {
    let last = purestate::ops::Axes::These(vec![-1]);
    let mean = x.mean(last.clone(), true)?;
    let variance = x.sub(&mean)?.square()?.mean(last, true)?;
    let inv = variance.add(1e-3)?.rsqrt()?.mul(gamma)?;
    x.mul(&inv)?.add(mean.neg()?.mul(&inv)?.add(beta)?)
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// `step` on a state the bench owns (updated in place after the first iteration), as `variant/threads`.
fn bench_owned(
    g: &mut Group<'_>,
    variant: &str,
    threads: &str,
    pool: &ThreadPool,
    state: &StateStore,
    step: impl Fn(StateStore) -> Result<StateStore> + Sync,
) {
    let mut owned = Some(state.clone());
    g.bench_function(BenchmarkId::new(variant, threads), |b| {
        pool.install(|| {
            b.iter(|| {
                let s = owned.take().unwrap();
                owned = Some(black_box(step(s).unwrap()));
            })
        })
    });
}

/// `step` as users run it, as `tape_committed/threads`: the trainer's head holds every buffer while the step
/// runs, and each new state is committed (keep_last(2) drops the version before the previous one).
fn bench_committed(
    g: &mut Group<'_>,
    threads: &str,
    pool: &ThreadPool,
    state: &StateStore,
    step: impl Fn(StateStore) -> Result<StateStore> + Sync,
) {
    let mut trainer: Trainer = Trainer::new(state.clone()).with_retention(Retention::keep_last(2));
    g.bench_function(BenchmarkId::new("tape_committed", threads), |b| {
        pool.install(|| {
            b.iter(|| {
                let next = step(trainer.state().clone()).unwrap();
                black_box(trainer.commit(next).unwrap())
            })
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
