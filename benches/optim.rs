//! Optimizer steps at 1e5 and 1e7 float32 parameters: the pure `Optimizer::apply` on an unshared state
//! (donated, updated in place) beside a hand-written fused in-place loop doing the same arithmetic and a plain
//! memory copy of the bytes the step touches (Adam: read p, m, v, g and write p, m, v = 28 bytes a parameter;
//! SGD with momentum: 20), all in one group per size.
//!
//! At 1e7 the purestate cases run at 1 and 2 rayon threads (`/1t`, `/2t`), and beside the unshared `apply`
//! stands the step as users run it: `trainer_keep_last_2`, where the state comes from a `Trainer` with
//! `Retention::keep_last(2)` (so the head holds every buffer the step reads: the copy path) and each new state
//! is committed (fingerprint and non-finite guard included). The hand-written loop runs on one thread. The `aliased_*` case runs the hand-written Adam loop on
//! buffers placed exactly 128 MiB apart, the layout that slowed the step several-fold on this machine.
//!
//! `adamw_ema_gpt` is the `lm` example's optimizer step: AdamW with moving averages over the 70 variables of its
//! 4-layer GPT (0.8 M parameters, none above the parallel threshold on its own), committed through a `Trainer`
//! at 1 and 2 threads, beside a plain copy of the bytes the step reads and writes.

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use purestate::grad::Grads;
use purestate::optim::{Adam, AdamW, Optimizer, Sgd};
use purestate::{init, Retention, StateStore, Tensor, Trainer, VariableSpec};

fn setup(n: usize, opt: &mut dyn Optimizer) -> (StateStore, Grads) {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Constant::new(0.5)).shape([n]).name("w")).unwrap();
    opt.build(&mut state, std::slice::from_ref(&w)).unwrap();
    let g = Tensor::from((0..n).map(|i| ((i % 17) as f32 - 8.0) * 1e-3).collect::<Vec<f32>>());
    let grads = Grads::from_pairs([(w, g)]).unwrap();
    // One step so that every buffer is the optimizer's own (unshared) before timing.
    let state = opt.apply(state, &grads).unwrap();
    (state, grads)
}

/// Keras's Adam, hand-written as one fused in-place loop over plain slices.
#[allow(clippy::too_many_arguments)]
fn adam_loop(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], alpha: f32, c1: f32, c2: f32, eps: f32) {
    for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        *m += (g - *m) * c1;
        *v += (g * g - *v) * c2;
        *p -= *m * alpha / (v.sqrt() + eps);
    }
}

/// The same Adam loop out of place: reads p, m, v and g, writes new p, m and v elsewhere (the floor for a step
/// whose previous state stays readable, as a trainer's history needs).
#[allow(clippy::too_many_arguments)]
fn adam_out_of_place(
    (p0, m0, v0): (&[f32], &[f32], &[f32]),
    (p1, m1, v1): (&mut [f32], &mut [f32], &mut [f32]),
    g: &[f32],
    alpha: f32,
    c1: f32,
    c2: f32,
    eps: f32,
) {
    let new = p1.iter_mut().zip(m1.iter_mut()).zip(v1.iter_mut());
    let old = p0.iter().zip(m0).zip(v0).zip(g);
    for (((p1, m1), v1), (((&p, &m), &v), &g)) in new.zip(old) {
        let m = m + (g - m) * c1;
        let v = v + (g * g - v) * c2;
        *m1 = m;
        *v1 = v;
        *p1 = p - m * alpha / (v.sqrt() + eps);
    }
}

fn sgd_loop(p: &mut [f32], m: &mut [f32], g: &[f32], momentum: f32, lr: f32) {
    for ((p, m), &g) in p.iter_mut().zip(m.iter_mut()).zip(g) {
        *m = *m * momentum - g * lr;
        *p += *m;
    }
}

/// Adam on 2^25 parameters (a power-of-two size: 4096 x 8192): purestate's buffers start at staggered offsets
/// (`kernels::buffer`); the hand-written loop runs once over four separate `Vec`s, which the allocator places a
/// power of two (plus one page) apart, and once over the same `Vec`s with the slices shifted by 64 bytes each.
fn pow2_adam(c: &mut Criterion) {
    let n = 1usize << 25;
    let mut group = c.benchmark_group(format!("adam_pow2/{n}"));
    group.throughput(Throughput::Bytes(28 * n as u64));
    group.sample_size(10);
    bench_apply(&mut group, n, Adam::new(1e-3));
    let pad = 64;
    let mut p = vec![0.5f32; n + pad];
    let mut m = vec![0.0f32; n + pad];
    let mut v = vec![0.0f32; n + pad];
    let g: Vec<f32> = (0..n + pad).map(|i| ((i % 17) as f32 - 8.0) * 1e-3).collect();
    group.bench_function("hand_written_separate_vecs", |b| {
        b.iter(|| adam_loop(&mut p[..n], &mut m[..n], &mut v[..n], black_box(&g[..n]), 1e-3, 0.1, 0.001, 1e-7))
    });
    group.bench_function("hand_written_staggered_64B", |b| {
        b.iter(|| {
            let (p, m, v, g) = (&mut p[..n], &mut m[16..16 + n], &mut v[32..32 + n], &g[48..48 + n]);
            adam_loop(p, m, v, black_box(g), 1e-3, 0.1, 0.001, 1e-7)
        })
    });
    group.finish();
}

/// `purestate_apply`: one optimizer step on an unshared state of `n` parameters (built and stepped once first).
fn bench_apply(group: &mut BenchmarkGroup<'_, WallTime>, n: usize, mut opt: impl Optimizer) {
    let (state, grads) = setup(n, &mut opt);
    let mut state = Some(state);
    group.bench_function("purestate_apply", |b| {
        b.iter(|| {
            let s = state.take().unwrap();
            state = Some(black_box(opt.apply(s, &grads).unwrap()));
        })
    });
}

/// At 1 and 2 threads: `purestate_apply/{t}t` (unshared state, in place) and `trainer_keep_last_2/{t}t` (the
/// state from a trainer's head, committed each step; the trainer keeps the last two versions and version 0).
fn bench_threads<O: Optimizer>(group: &mut BenchmarkGroup<'_, WallTime>, n: usize, make: impl Fn() -> O) {
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut opt = make();
        let (state, grads) = setup(n, &mut opt);
        let mut state = Some(state);
        group.bench_function(format!("purestate_apply/{threads}t"), |b| {
            pool.install(|| {
                b.iter(|| {
                    let s = state.take().unwrap();
                    state = Some(black_box(opt.apply(s, &grads).unwrap()));
                })
            })
        });
        drop(state);
        let mut opt = make();
        let (state, grads) = setup(n, &mut opt);
        bench_committed(group, &pool, threads, &mut opt, state, &grads);
    }
}

/// `trainer_keep_last_2/{threads}t`: each step's state comes from a trainer's head (keep_last(2), so the head
/// holds every buffer the step reads: the copy path) and the new state is committed, on `pool`.
fn bench_committed(
    group: &mut BenchmarkGroup<'_, WallTime>,
    pool: &rayon::ThreadPool,
    threads: usize,
    opt: &mut impl Optimizer,
    state: StateStore,
    grads: &Grads,
) {
    let mut trainer: Trainer = Trainer::new(state).with_retention(Retention::keep_last(2));
    group.bench_function(format!("trainer_keep_last_2/{threads}t"), |b| {
        pool.install(|| {
            b.iter(|| {
                let next = opt.apply(trainer.state().clone(), grads).unwrap();
                black_box(trainer.commit(next).unwrap());
            })
        })
    });
}

/// The variable shapes of the `lm` example's GPT (vocabulary 83, context 64, 4 layers, 4 heads, d_model 128).
fn gpt_shapes() -> Vec<Vec<usize>> {
    let (vocab, context, d, heads, ff) = (83, 64, 128, 4, 512);
    let mut shapes = vec![vec![vocab, d], vec![context, d]];
    for _ in 0..4 {
        shapes.extend([vec![d], vec![d]]);
        for _ in 0..3 {
            shapes.extend([vec![d, heads, d / heads], vec![heads, d / heads]]);
        }
        shapes.extend([vec![heads, d / heads, d], vec![d], vec![d], vec![d]]);
        shapes.extend([vec![d, ff], vec![ff], vec![ff, d], vec![d]]);
    }
    shapes.extend([vec![d], vec![d], vec![d, vocab], vec![vocab]]);
    shapes
}

/// `adamw_ema_gpt`: AdamW with `use_ema` over the GPT's variables, each step committed (keep_last(2)).
fn gpt_adamw(c: &mut Criterion) {
    let shapes = gpt_shapes();
    let n: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    let mut group = c.benchmark_group("adamw_ema_gpt");
    // Read p, m, v, g and the average, write p, m, v and the average.
    group.throughput(Throughput::Bytes(36 * n as u64));
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut state = StateStore::new();
        let vars: Vec<_> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                state.create(VariableSpec::new(init::Constant::new(0.5)).shape(s.as_slice()).name(format!("v{i}")))
            })
            .collect::<Result<_, _>>()
            .unwrap();
        let mut opt = AdamW::new(3e-3).use_ema(0.99);
        opt.build(&mut state, &vars).unwrap();
        let grads = Grads::from_pairs(vars.iter().zip(&shapes).map(|(v, s)| {
            let size = s.iter().product::<usize>();
            let g: Vec<f32> = (0..size).map(|i| ((i % 17) as f32 - 8.0) * 1e-3).collect();
            (v.clone(), Tensor::from(g).reshape(&s.iter().map(|&d| d as isize).collect::<Vec<_>>()).unwrap())
        }))
        .unwrap();
        bench_committed(&mut group, &pool, threads, &mut opt, state, &grads);
    }
    let src = vec![1u8; 18 * n];
    let mut dst = vec![0u8; 18 * n];
    group.bench_function("memcpy_same_bytes", |b| b.iter(|| dst.copy_from_slice(black_box(&src))));
    group.finish();
}

fn bench_optim(c: &mut Criterion) {
    gpt_adamw(c);
    for n in [100_000usize, 10_000_000] {
        let mut group = c.benchmark_group(format!("adam/{n}"));
        group.throughput(Throughput::Bytes(28 * n as u64));
        if n > 1_000_000 {
            group.sample_size(20);
        }
        if n > 1_000_000 {
            bench_threads(&mut group, n, || Adam::new(1e-3));
        } else {
            bench_apply(&mut group, n, Adam::new(1e-3));
        }
        let (mut p, mut m, mut v) = (vec![0.5f32; n], vec![0.0f32; n], vec![0.0f32; n]);
        let g: Vec<f32> = (0..n).map(|i| ((i % 17) as f32 - 8.0) * 1e-3).collect();
        group.bench_function("hand_written_in_place", |b| {
            b.iter(|| adam_loop(&mut p, &mut m, &mut v, black_box(&g), 1e-3, 0.1, 0.001, 1e-7))
        });
        // Two sets of buffers written in turn, as a trainer keeping the last two versions would.
        let mut sets = [[p.clone(), m.clone(), v.clone()], [p.clone(), m.clone(), v.clone()]];
        let mut turn = 0;
        group.bench_function("hand_written_out_of_place", |b| {
            b.iter(|| {
                let (first, second) = sets.split_at_mut(1);
                let (old, new) = if turn % 2 == 0 { (&first[0], &mut second[0]) } else { (&second[0], &mut first[0]) };
                let [p1, m1, v1] = new;
                adam_out_of_place((&old[0], &old[1], &old[2]), (p1, m1, v1), black_box(&g), 1e-3, 0.1, 0.001, 1e-7);
                turn += 1;
            })
        });
        drop(sets);
        let src = vec![1u8; 14 * n];
        let mut dst = vec![0u8; 14 * n];
        group.bench_function("memcpy_same_bytes", |b| b.iter(|| dst.copy_from_slice(black_box(&src))));
        if n > 1_000_000 {
            // p, m, v, g exactly 128 MiB apart in one allocation.
            let stride = (128 << 20) / 4;
            let mut big = vec![0.0f32; 3 * stride + n];
            big[3 * stride..].copy_from_slice(&g);
            group.bench_function("aliased_128MiB_hand_written", |b| {
                b.iter(|| {
                    let (p, rest) = big.split_at_mut(stride);
                    let (m, rest) = rest.split_at_mut(stride);
                    let (v, g) = rest.split_at_mut(stride);
                    adam_loop(&mut p[..n], &mut m[..n], &mut v[..n], &g[..n], 1e-3, 0.1, 0.001, 1e-7)
                })
            });
        }
        group.finish();

        if n > 1_000_000 {
            pow2_adam(c);
        }

        let mut group = c.benchmark_group(format!("sgd_momentum/{n}"));
        group.throughput(Throughput::Bytes(20 * n as u64));
        if n > 1_000_000 {
            group.sample_size(20);
        }
        if n > 1_000_000 {
            bench_threads(&mut group, n, || Sgd::new(1e-2).momentum(0.9));
        } else {
            bench_apply(&mut group, n, Sgd::new(1e-2).momentum(0.9));
        }
        let (mut p, mut m) = (vec![0.5f32; n], vec![0.0f32; n]);
        group
            .bench_function("hand_written_in_place", |b| b.iter(|| sgd_loop(&mut p, &mut m, black_box(&g), 0.9, 1e-2)));
        let src = vec![1u8; 10 * n];
        let mut dst = vec![0u8; 10 * n];
        group.bench_function("memcpy_same_bytes", |b| b.iter(|| dst.copy_from_slice(black_box(&src))));
        group.finish();
    }
}

criterion_group!(benches, bench_optim);
criterion_main!(benches);
