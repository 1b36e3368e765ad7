//! What micro-batches cost: a data-parallel training step on 2 in-process replicas, committed through a
//! `Trainer`, with and without a micro-batch size, beside the plain step on the whole batch, in the same run.
//!
//! Variants, for the digits MLP (64-128-10, batch 128) and the 784-1024-1024-10 MLP (batch 256), with relu hidden
//! layers, softmax cross-entropy and Adam, on a 2-thread pool:
//!
//! - `plain/R`: `grad::value_and_grad` over the first R examples, no runner (R = B, B / 2, B / 4);
//! - `shards`: `Replicas::in_process(2)` without a micro-batch size: one micro-batch per replica (half the
//!   batch each), the split the runner made before micro-batching; results depend on the replica count;
//! - `micro/K`: `Replicas::in_process(2).micro_batch(B / K)`: K micro-batches, K / 2 per replica, added in the
//!   fixed tree; the same bits for any replica count.
//!
//! ```text
//! cargo bench --bench replica -- --warm-up-time 1 --measurement-time 5
//! ```

#[path = "common/mlp.rs"]
mod mlp;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use mlp::{build, Mlp};
use purestate::grad;
use purestate::optim::Optimizer;
use purestate::replica::{ReplicaContext, ReplicaOutput, Replicas};
use purestate::{losses, Result, Retention, Scope, StateStore, Trainer};
use rayon::ThreadPoolBuilder;

/// The mean loss over the examples `rows` and its gradient.
fn loss_and_grads(state: &StateStore, m: &Mlp, rows: std::ops::Range<usize>) -> Result<ReplicaOutput> {
    let n_in = m.x.dims()[1];
    let x = m.x.slice(&[rows.start, 0], &[rows.len() as isize, n_in as isize])?;
    let labels = m.labels.slice(&[rows.start], &[rows.len() as isize])?;
    let (loss, grads) = grad::value_and_grad(state, |s: &mut Scope| {
        losses::sparse_categorical_crossentropy(&labels, &m.logits(s, &x)?, true)
    })?;
    Ok(ReplicaOutput { state: state.clone(), grads, loss: loss.to_f64()? as f32 })
}

fn bench(c: &mut Criterion) {
    let pool = ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for (sizes, batch) in [(vec![64, 128, 10], 128), (vec![784, 1024, 1024, 10], 256)] {
        let name = sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("-");
        let mut g = c.benchmark_group(format!("dp/{name}"));
        if batch > 128 {
            g.sample_size(20).sampling_mode(SamplingMode::Flat);
        }
        let (state, m) = build(&sizes, batch);
        let m = &m;
        let committed = |g: &mut criterion::BenchmarkGroup<'_, _>,
                         id: BenchmarkId,
                         step: &(dyn Fn(&StateStore) -> StateStore + Sync)| {
            let mut trainer: Trainer = Trainer::new(state.clone()).with_retention(Retention::keep_last(2));
            g.bench_function(id, |b| {
                pool.install(|| {
                    b.iter(|| {
                        let next = step(trainer.state());
                        black_box(trainer.commit(next).unwrap())
                    })
                })
            });
        };
        // The plain step on the whole batch, and on a half and a quarter of it (what one micro-batch costs).
        for rows in [batch, batch / 2, batch / 4] {
            committed(&mut g, BenchmarkId::new("plain", rows), &|s| {
                let out = loss_and_grads(s, m, 0..rows).unwrap();
                m.opt.apply(s.clone(), &out.grads).unwrap()
            });
        }
        let replicated = |runner: Replicas| {
            move |s: &StateStore| {
                let out =
                    runner.step(s, batch, |ctx: &ReplicaContext, st| loss_and_grads(&st, m, ctx.range())).unwrap();
                m.opt.apply(out.state, &out.grads).unwrap()
            }
        };
        committed(&mut g, BenchmarkId::new("shards", 2), &replicated(Replicas::in_process(2).unwrap()));
        for k in [2, 4, 8] {
            let runner = Replicas::in_process(2).unwrap().micro_batch(batch / k).unwrap();
            committed(&mut g, BenchmarkId::new("micro", k), &replicated(runner));
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
