//! Store costs at 100, 10,000 and 100,000 variables: snapshot (clone), get, and assign + commit of one
//! variable. The snapshot must not grow with the number or size of variables; assign + commit no faster than
//! log n (commit fingerprints the whole state, so it is measured separately from `assign`).
//!
//! `large_commit/1e7`: the commit of a 1e7-parameter float32 state (10 variables of 1e6) after an optimizer
//! step changed every variable, and after one changed only one, beside what its cost is made of (the fresh
//! fingerprint of a state, which hashes and scans every changed variable; the cached fingerprint of a committed
//! one), the finiteness scan the commit also runs (`Tensor::is_all_finite`, and a plain branch-free fold), and
//! two baselines over the same 40 MB: a memory copy and a one-shot XXH3-128.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use purestate::{Retention, StateStore, Tensor, Trainer, Variable, VariableSpec};

const SIZES: [usize; 3] = [100, 10_000, 100_000];

fn store_of(n: usize) -> (StateStore, Vec<Variable>) {
    let mut state = StateStore::new();
    let vars = (0..n)
        .map(|i| state.create(VariableSpec::new(Tensor::from(vec![i as f32; 16])).name(format!("v{i}"))).unwrap())
        .collect();
    (state, vars)
}

fn bench_store(c: &mut Criterion) {
    let mut clone = c.benchmark_group("clone");
    for n in SIZES {
        let (state, _) = store_of(n);
        clone.bench_with_input(BenchmarkId::from_parameter(n), &state, |b, s| b.iter(|| black_box(s.clone())));
    }
    clone.finish();

    let mut get = c.benchmark_group("get");
    for n in SIZES {
        let (state, vars) = store_of(n);
        let w = &vars[n / 2];
        get.bench_with_input(BenchmarkId::from_parameter(n), &state, |b, s| b.iter(|| black_box(s.get(w).unwrap())));
    }
    get.finish();

    // Assign one variable in a snapshot the history still holds: the path of O(log n) tree nodes is copied.
    let mut assign = c.benchmark_group("assign_snapshot");
    for n in SIZES {
        let (state, vars) = store_of(n);
        let w = &vars[n / 2];
        let value = Tensor::from(vec![1.0f32; 16]);
        assign.bench_with_input(BenchmarkId::from_parameter(n), &state, |b, s| {
            b.iter(|| {
                let mut next = s.clone();
                next.assign(w, value.clone()).unwrap();
                black_box(next)
            })
        });
    }
    assign.finish();

    // A trainer commit: snapshot, assign one variable, commit (fingerprint of every variable included).
    let mut commit = c.benchmark_group("assign_commit");
    commit.sample_size(20);
    for n in SIZES {
        let (state, vars) = store_of(n);
        let w = vars[n / 2].clone();
        let value = Tensor::from(vec![1.0f32; 16]);
        let mut trainer: Trainer = Trainer::new(state).with_retention(purestate::Retention::keep_last(2));
        commit.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let mut next = trainer.state().clone();
                next.assign(&w, value.clone()).unwrap();
                black_box(trainer.commit(next).unwrap())
            })
        });
    }
    commit.finish();
}

const LARGE_VARS: usize = 10;
const LARGE_LEN: usize = 1_000_000;

/// A trainer over 10 float32 variables of 1e6 elements, keeping only the head (and version 0).
fn large_trainer() -> (Trainer, Vec<Variable>) {
    let mut state = StateStore::new();
    let vars = (0..LARGE_VARS)
        .map(|i| {
            let value: Vec<f32> = (0..LARGE_LEN).map(|j| ((i * LARGE_LEN + j) % 1000) as f32 * 1e-3).collect();
            state.create(VariableSpec::new(Tensor::from(value)).name(format!("w{i}"))).unwrap()
        })
        .collect();
    (Trainer::new(state).with_retention(Retention::keep_last(1)), vars)
}

/// Times `trainer.commit` alone over `iters` commits of a state in which the `changed` first variables were
/// updated (as by an optimizer step). The step and the freeing of the version the commit prunes happen outside
/// the timed region.
fn time_commits(trainer: &mut Trainer, vars: &[Variable], changed: usize, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut next = trainer.state().clone();
        for var in &vars[..changed] {
            next.assign_add(var, Tensor::from(1e-3f32)).unwrap();
        }
        let pruned = trainer.state().clone(); // keeps the pruned version's buffers alive past the timing
        let start = Instant::now();
        black_box(trainer.commit(next).unwrap());
        total += start.elapsed();
        drop(pruned);
    }
    total
}

fn bench_large_commit(c: &mut Criterion) {
    let (mut trainer, vars) = large_trainer();
    let bytes = (LARGE_VARS * LARGE_LEN * 4) as u64;
    let mut g = c.benchmark_group("large_commit/1e7");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));

    g.bench_function("commit_all_changed", |b| {
        b.iter_custom(|iters| time_commits(&mut trainer, &vars, LARGE_VARS, iters))
    });
    g.bench_function("commit_one_changed", |b| b.iter_custom(|iters| time_commits(&mut trainer, &vars, 1, iters)));

    // The fingerprint of a state whose every variable changed since the last commit: computed on the fly (the
    // digest and the finiteness scan of each variable, as `commit` does), without caching.
    let mut fresh = trainer.state().clone();
    for var in &vars {
        fresh.assign_add(var, Tensor::from(1e-3f32)).unwrap();
    }
    g.bench_function("fingerprint_fresh", |b| b.iter(|| black_box(&fresh).fingerprint()));
    let committed = trainer.state().clone();
    g.bench_function("fingerprint_cached", |b| b.iter(|| black_box(&committed).fingerprint()));

    let values: Vec<Tensor> = vars.iter().map(|v| fresh.get(v).unwrap()).collect();
    let slices: Vec<&[f32]> = values.iter().map(|t| t.as_slice::<f32>().unwrap()).collect();
    g.bench_function("finite_scan", |b| b.iter(|| values.iter().all(|t| black_box(t).is_all_finite())));
    // The same answer from a branch-free fold on one thread, which the compiler vectorizes.
    g.bench_function("finite_fold_plain", |b| {
        b.iter(|| slices.iter().fold(true, |acc, s| acc & black_box(s).iter().fold(true, |a, x| a & x.is_finite())))
    });
    g.bench_function("xxh3_128", |b| {
        b.iter(|| {
            slices.iter().fold(0u128, |acc, s| {
                acc.wrapping_add(twox_hash::XxHash3_128::oneshot(bytemuck::cast_slice(black_box(s))))
            })
        })
    });
    let mut dst = vec![vec![0.0f32; LARGE_LEN]; LARGE_VARS];
    g.bench_function("memcpy", |b| {
        b.iter(|| {
            for (d, s) in dst.iter_mut().zip(&slices) {
                d.copy_from_slice(black_box(s));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_store, bench_large_commit);
criterion_main!(benches);
