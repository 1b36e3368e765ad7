//! Store costs at 100, 10,000 and 100,000 variables: snapshot (clone), get, and assign + commit of one
//! variable. The snapshot must not grow with the number or size of variables; assign + commit no faster than
//! log n (commit fingerprints the whole state, so it is measured separately from `assign`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use purestate::{StateStore, Tensor, Trainer, Variable, VariableSpec};

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

criterion_group!(benches, bench_store);
criterion_main!(benches);
