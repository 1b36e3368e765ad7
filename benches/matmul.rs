//! The matrix products of the 784-1024-1024-10 MLP (batch 256), forward and backward, at 1 and 2 rayon
//! threads: purestate's `kernels::gemm` (the `gemm` crate) beside `ndarray`'s `dot` (matrixmultiply, one
//! thread: the baseline), measured in the same run. (`faer`'s safe `matmul` was measured beside them once, at
//! commit 56a76cb, and left out since: it is not a dependency; figures in ARCHITECTURE.md.) The backward forms read a
//! transposed operand in place: `x.T @ dy` (dW) and `dy @ w.T` (dX).
//!
//! `threshold/*` times the small products of the 64-128-10 MLP (batch 128) on the calling thread and split
//! over 2 threads, to place `kernels::gemm::THRESHOLD`.
//!
//! Run: `cargo bench --bench matmul -- --warm-up-time 1 --measurement-time 3`. For ndarray's
//! `matrixmultiply-threading`, run again with `--features ndarray/matrixmultiply-threading` and
//! `MATMUL_NUM_THREADS=1` / `=2`: `dot` then uses matrixmultiply's own threads (not rayon's pool).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{Array2, ArrayView2};
use purestate::kernels::gemm::{gemm, gemm_on};

fn matrix(rows: usize, cols: usize, seed: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |(i, j)| ((i * 31 + j * 17 + seed) % 23) as f32 / 23.0 - 0.5)
}

/// A product `a @ b` where each operand is stored as given and optionally read transposed.
struct Case {
    name: &'static str,
    a: Array2<f32>,
    a_t: bool,
    b: Array2<f32>,
    b_t: bool,
}

impl Case {
    fn views(&self) -> (ArrayView2<'_, f32>, ArrayView2<'_, f32>) {
        let a = if self.a_t { self.a.t() } else { self.a.view() };
        let b = if self.b_t { self.b.t() } else { self.b.view() };
        (a, b)
    }
}

fn cases() -> Vec<Case> {
    let (b, i, h, o) = (256, 784, 1024, 10);
    vec![
        Case { name: "fwd_x_w1_256x784x1024", a: matrix(b, i, 1), a_t: false, b: matrix(i, h, 2), b_t: false },
        Case { name: "fwd_h_w2_256x1024x1024", a: matrix(b, h, 3), a_t: false, b: matrix(h, h, 4), b_t: false },
        Case { name: "fwd_h_w3_256x1024x10", a: matrix(b, h, 5), a_t: false, b: matrix(h, o, 6), b_t: false },
        Case { name: "dw1_xT_dy_784x256x1024", a: matrix(b, i, 7), a_t: true, b: matrix(b, h, 8), b_t: false },
        Case { name: "dx2_dy_w2T_256x1024x1024", a: matrix(b, h, 9), a_t: false, b: matrix(h, h, 10), b_t: true },
    ]
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}

fn products(c: &mut Criterion) {
    for case in cases() {
        let (a, b) = case.views();
        let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
        let mut g = c.benchmark_group(format!("matmul/{}", case.name));
        g.throughput(Throughput::Elements((2 * m * n * k) as u64)); // FLOPs: criterion prints Gelem/s = GFLOP/s
        let mut out = vec![0.0f32; m * n];
        for threads in [1, 2] {
            let p = pool(threads);
            g.bench_function(BenchmarkId::new("ndarray_dot", threads), |bench| {
                p.install(|| bench.iter(|| black_box(a).dot(&b)))
            });
            g.bench_function(BenchmarkId::new("gemm", threads), |bench| {
                p.install(|| bench.iter(|| gemm(black_box(a), b, &mut out)))
            });
        }
        g.finish();
    }
}

/// The products of the 64-128-10 MLP at batch 128 (forward and backward): one thread vs split over two.
fn threshold(c: &mut Criterion) {
    let sizes = [
        (128, 64, 128),
        (128, 128, 10),
        (64, 128, 128),
        (128, 10, 128),
        (128, 32, 128),
        (128, 16, 128),
        (64, 64, 64),
        (256, 256, 256),
        (256, 512, 256),
    ];
    let p = pool(2);
    for (m, k, n) in sizes {
        let (a, b) = (matrix(m, k, 1), matrix(k, n, 2));
        let mut out = vec![0.0f32; m * n];
        let mut g = c.benchmark_group(format!("threshold/{m}x{k}x{n}"));
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        for threads in [1, 2] {
            g.bench_function(BenchmarkId::new("gemm_threads", threads), |bench| {
                p.install(|| bench.iter(|| gemm_on(black_box(a.view()), b.view(), &mut out, threads)))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, products, threshold);
criterion_main!(benches);
