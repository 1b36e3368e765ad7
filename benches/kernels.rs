//! Kernel throughput beside its baselines, measured in the same run: add, mul-add and sum at 1e3, 1e5 and
//! 1e7 float32 elements, each next to a plain `ndarray` loop on one thread and a `copy_from_slice` that moves
//! the same number of bytes; the parallel threshold (`threshold/*`: one thread vs chunks over rayon); and the
//! run-time dispatch (`dispatch/<op>/<n>`: `exp`, `tanh`, `add` and the exact `gelu` on the AVX2 + FMA loops
//! of `kernels::simd` beside the same ops forced onto the baseline loops, same bits).
//!
//! Throughput counts bytes read plus bytes written: add and mul-add move 12 bytes per element (two reads and
//! one write of f32), sum 4; the copy moves the same total (half read, half written), so GB/s compare
//! directly. Run: `cargo bench --bench kernels -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{Array1, Zip};
use purestate::ops::Axes;
use purestate::{kernels, Tensor};
use rayon::prelude::*;

const SIZES: [usize; 3] = [1_000, 100_000, 10_000_000];

fn values(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| (i % 1000) as f32 * 0.001 + seed).collect()
}

fn add(c: &mut Criterion) {
    for n in SIZES {
        let mut g = c.benchmark_group(format!("add/{n}"));
        g.throughput(Throughput::Bytes(12 * n as u64));
        let (x, y) = (Tensor::from(values(n, 1.0)), Tensor::from(values(n, 2.0)));
        let mut acc = Tensor::from(values(n, 0.0));
        g.bench_function("purestate_new_output", |b| b.iter(|| black_box(&x).add(&y).unwrap()));
        g.bench_function("purestate_assign_add", |b| b.iter(|| acc.assign_add(black_box(&y)).unwrap()));
        // `owned + &y`: the unshared left operand lends its buffer to the result (donation).
        g.bench_function("purestate_donated", |b| {
            b.iter(|| {
                let owned = std::mem::replace(&mut acc, Tensor::scalar(0.0f32));
                acc = owned + black_box(&y);
            })
        });
        let (xa, ya) = (Array1::from(values(n, 1.0)), Array1::from(values(n, 2.0)));
        // The same fresh-output operation in plain ndarray (a new array per call, from the system allocator).
        g.bench_function("ndarray_new_output", |b| b.iter(|| black_box(&xa) + &ya));
        let mut out = Array1::<f32>::zeros(n);
        g.bench_function("ndarray_loop_into_existing", |b| {
            b.iter(|| Zip::from(&mut out).and(black_box(&xa)).and(&ya).for_each(|o, &a, &b| *o = a + b))
        });
        let (src, mut dst) = (values(n * 3 / 2, 0.0), vec![0.0f32; n * 3 / 2]);
        g.bench_function("memcpy", |b| b.iter(|| dst.copy_from_slice(black_box(&src))));
        g.finish();
    }
}

fn mul_add(c: &mut Criterion) {
    for n in SIZES {
        let mut g = c.benchmark_group(format!("mul_add/{n}"));
        g.throughput(Throughput::Bytes(12 * n as u64));
        let grad = values(n, 1.0);
        let mut p = values(n, 0.0);
        g.bench_function("purestate_zip_mut_in_place", |b| {
            b.iter(|| kernels::zip_mut((&mut p[..], black_box(&grad[..])), |(p, g)| *p += 1e-3 * g).unwrap())
        });
        let (x, y) = (Tensor::from(values(n, 1.0)), Tensor::from(values(n, 2.0)));
        g.bench_function("purestate_ops_x_times_s_plus_y", |b| b.iter(|| &x * black_box(0.5) + &y));
        let ga = Array1::from(values(n, 1.0));
        let mut pa = Array1::from(values(n, 0.0));
        g.bench_function("ndarray_loop_in_place", |b| {
            b.iter(|| Zip::from(&mut pa).and(black_box(&ga)).for_each(|p, &g| *p += 1e-3 * g))
        });
        let (src, mut dst) = (values(n * 3 / 2, 0.0), vec![0.0f32; n * 3 / 2]);
        g.bench_function("memcpy", |b| b.iter(|| dst.copy_from_slice(black_box(&src))));
        g.finish();
    }
}

fn sum(c: &mut Criterion) {
    for n in SIZES {
        let mut g = c.benchmark_group(format!("sum/{n}"));
        g.throughput(Throughput::Bytes(4 * n as u64));
        let x = Tensor::from(values(n, 1.0));
        let xs = values(n, 1.0);
        g.bench_function("purestate_tensor_sum", |b| b.iter(|| black_box(&x).sum(Axes::All, false).unwrap()));
        g.bench_function("purestate_kernels_sum_by", |b| b.iter(|| kernels::sum_by(black_box(&xs[..]), |v| v)));
        let xa = Array1::from(values(n, 1.0));
        g.bench_function("ndarray_sum", |b| b.iter(|| black_box(&xa).sum()));
        let (src, mut dst) = (values(n / 2, 0.0), vec![0.0f32; n / 2]);
        g.bench_function("memcpy", |b| b.iter(|| dst.copy_from_slice(black_box(&src))));
        g.finish();
    }
}

/// Where splitting an in-place add over rayon starts to pay: the measurement behind `kernels::THRESHOLD`.
fn threshold(c: &mut Criterion) {
    let mut g = c.benchmark_group("threshold");
    for n in [4_096usize, 16_384, 32_768, 65_536, 131_072] {
        g.throughput(Throughput::Bytes(12 * n as u64));
        let src = values(n, 1.0);
        let mut dst = values(n, 0.0);
        g.bench_with_input(BenchmarkId::new("one_thread", n), &n, |b, _| {
            b.iter(|| dst.iter_mut().zip(black_box(&src)).for_each(|(d, s)| *d += s))
        });
        g.bench_with_input(BenchmarkId::new("rayon_chunks", n), &n, |b, _| {
            b.iter(|| {
                dst.par_chunks_mut(kernels::CHUNK / 4)
                    .zip(black_box(&src).par_chunks(kernels::CHUNK / 4))
                    .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, s)| *d += s))
            })
        });
    }
    g.finish();
}

fn dispatch(c: &mut Criterion) {
    use kernels::simd;
    type Op = fn(&Tensor, &Tensor) -> Tensor;
    let ops: [(&str, Op); 4] = [
        ("exp", |x, _| x.exp().unwrap()),
        ("tanh", |x, _| x.tanh().unwrap()),
        ("add", |x, y| x.add(y).unwrap()),
        ("gelu", |x, _| x.gelu(false).unwrap()),
    ];
    for n in [100_000, 10_000_000] {
        let (x, y) = (Tensor::from(values(n, -0.5)), Tensor::from(values(n, 2.0)));
        for (name, op) in ops {
            let mut g = c.benchmark_group(format!("dispatch/{name}/{n}"));
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(format!("{:?}", simd::detected()).to_lowercase(), |b| b.iter(|| op(black_box(&x), &y)));
            simd::force_baseline(true);
            g.bench_function("baseline", |b| b.iter(|| op(black_box(&x), &y)));
            simd::force_baseline(false);
            g.finish();
        }
    }
}

criterion_group!(benches, add, mul_add, sum, threshold, dispatch);
criterion_main!(benches);
