//! Every kernel gives bit-identical output with 1, 2 and 7 rayon threads (local pools), reductions included.

use proptest::prelude::*;
use purestate::ops::{Axes, BinaryOp};
use purestate::{kernels, DType, Tensor};
use rayon::ThreadPoolBuilder;

/// Values with varied magnitudes and signs, so float sums depend on their order.
fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            unit * 10f32.powi((state % 7) as i32 - 3)
        })
        .collect()
}

/// Everything computed from `x` (rows of `cols`), as tensors and raw bits.
fn run_all(x: &[f32], cols: usize) -> Vec<Tensor> {
    let rows = x.len() / cols;
    let t = Tensor::from_shape_vec([rows, cols], x[..rows * cols].to_vec()).unwrap();
    let row = Tensor::from(x[..cols].to_vec());
    let h = t.cast(DType::Float16);
    let mut out = vec![
        t.add(&row).unwrap(),
        t.mul(0.5).unwrap().sub(t.transpose().transpose()).unwrap(),
        t.exp().unwrap(),
        h.mul(&h).unwrap(),
        t.sum(Axes::All, false).unwrap(),
        t.sum(0, false).unwrap(),
        t.sum(1, true).unwrap(),
        t.mean(Axes::All, false).unwrap(),
        h.sum(Axes::All, false).unwrap(),
        t.max(Axes::All, false).unwrap(),
        t.min(0, false).unwrap(),
        t.norm(Axes::All, false).unwrap(),
        t.argmax(None, false).unwrap(),
        t.argmax(Some(1), false).unwrap(),
        t.softmax(-1).unwrap(),
        purestate::ops::binary(BinaryOp::Mod, &t, 0.3, DType::Float32).unwrap(),
    ];
    let mut p = x.to_vec();
    let mut m = vec![0.0f32; x.len()];
    kernels::zip_mut((&mut p[..], &mut m[..], x), |(p, m, g)| {
        *m = 0.9 * *m + 0.1 * g;
        *p -= 0.01 * *m / (m.abs().sqrt() + 1e-7);
    })
    .unwrap();
    out.push(Tensor::from(p));
    out.push(Tensor::scalar(kernels::sum_by(x, |v| f64::from(v) * 1e-3)));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn kernels_ignore_the_thread_count(len in 1usize..300_000, cols in 1usize..700, seed in any::<u64>()) {
        let x = data(len.max(cols), seed);
        let results: Vec<Vec<Tensor>> = [1, 2, 7]
            .iter()
            .map(|&n| ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(|| run_all(&x, cols)))
            .collect();
        for (i, (a, b)) in results[0].iter().zip(&results[1]).enumerate() {
            prop_assert!(a.bit_eq(b), "output {} differs between 1 and 2 threads", i);
        }
        for (i, (a, b)) in results[0].iter().zip(&results[2]).enumerate() {
            prop_assert!(a.bit_eq(b), "output {} differs between 1 and 7 threads", i);
        }
    }
}

#[test]
fn large_sum_is_the_same_tree_on_every_pool() {
    let x = data(1 << 20, 42);
    let sums: Vec<u32> = [1, 2, 7]
        .iter()
        .map(|&n| ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(|| kernels::sum_by(&x, |v| v)))
        .map(f32::to_bits)
        .collect();
    assert!(sums.iter().all(|&s| s == sums[0]), "{sums:?}");
}

/// A `(rows, cols)` float32 tensor of `data`.
fn matrix(rows: usize, cols: usize, seed: u64) -> Tensor {
    Tensor::from_shape_vec([rows, cols], data(rows * cols, seed)).unwrap()
}

/// The MLP's products (784-1024-1024-10 at batch 256, forward and the backward's transposed forms), odd sizes
/// with transposed operands, float64 and float16, and stacks (large members one after another, small ones side
/// by side), all computed on one pool.
fn products() -> Vec<Tensor> {
    let (x, w1, w2, w3) = (matrix(256, 784, 1), matrix(784, 1024, 2), matrix(1024, 1024, 3), matrix(1024, 10, 4));
    let dy = matrix(256, 1024, 5);
    let (a, b) = (matrix(257, 513, 6), matrix(513, 131, 7));
    let mm = |p: &Tensor, q: &Tensor| p.matmul(q).unwrap();
    let stack =
        |n: usize, r: usize, c: usize, seed: u64| Tensor::from_shape_vec([n, r, c], data(n * r * c, seed)).unwrap();
    vec![
        mm(&x, &w1),
        mm(&dy, &w2),
        mm(&dy, &w3),
        mm(&x.transpose(), &dy),  // dW1 = x.T @ dy
        mm(&dy, &w2.transpose()), // dX = dy @ w2.T
        mm(&dy.cast(DType::Float64), &w2.transpose().cast(DType::Float64)),
        mm(&a, &b),
        mm(&b.transpose(), &a.transpose()),
        mm(&a.cast(DType::Float16), &b.cast(DType::Float16)),
        mm(&stack(3, 257, 65, 8), &stack(3, 65, 129, 9)),
        mm(&stack(64, 33, 65, 10), &stack(64, 65, 31, 11)),
        mm(&a.index(&[purestate::tensor::Idx::I(0)]).unwrap(), &b),
    ]
}

#[test]
fn matmul_is_bit_identical_on_every_pool() {
    let results: Vec<Vec<Tensor>> =
        [1, 2, 7].iter().map(|&n| ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(products)).collect();
    for threads in [1, 2] {
        for (i, (a, b)) in results[0].iter().zip(&results[threads]).enumerate() {
            assert!(a.bit_eq(b), "product {i} differs between 1 and {} threads", [1, 2, 7][threads]);
        }
    }
    // A transposed operand read in place gives the bits of its contiguous copy.
    let (x, dy) = (matrix(256, 784, 1), matrix(256, 1024, 5));
    let copied = x.transpose().to_standard_layout().matmul(&dy).unwrap();
    assert!(results[0][3].bit_eq(&copied), "x.T @ dy differs from its contiguous copy's product");
    // And the values are the product: one entry against a float64 sum.
    let (xs, ds) = (x.to_f64_vec(), dy.to_f64_vec());
    let want: f64 = (0..256).map(|r| xs[r * 784 + 5] * ds[r * 1024 + 7]).sum();
    let got = results[0][3].to_f64_vec()[5 * 1024 + 7];
    assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "{got} vs {want}");
}

/// A few steps of elementwise work whose loops are dispatched to AVX2 + FMA (`kernels::simd`): activations
/// with polynomial kernels, broadcasting arithmetic, softmax, LayerNorm-style statistics, an Adam update.
fn dispatched_work() -> Vec<Tensor> {
    let x = matrix(96, 700, 21);
    let mean = x.mean(-1, true).unwrap();
    let centered = x.sub(&mean).unwrap();
    let mut state = purestate::StateStore::new();
    let w = state.create(purestate::VariableSpec::new(x.clone()).name("w")).unwrap();
    let mut opt = purestate::optim::Adam::new(1e-3);
    purestate::optim::Optimizer::build(&mut opt, &mut state, std::slice::from_ref(&w)).unwrap();
    let grads = purestate::grad::Grads::from_pairs([(w.clone(), centered.clone())]).unwrap();
    let next = purestate::optim::Optimizer::apply(&opt, state, &grads).unwrap();
    vec![
        x.gelu(false).unwrap(),
        x.gelu(true).unwrap(),
        x.erf().unwrap(),
        x.silu().unwrap(),
        x.mul(3.0).unwrap().exp().unwrap().tanh().unwrap(),
        centered.clone(),
        centered.div(centered.square().unwrap().mean(-1, true).unwrap().add(1e-5).unwrap().sqrt().unwrap()).unwrap(),
        x.softmax(-1).unwrap(),
        next.get(&w).unwrap(),
    ]
}

#[test]
fn dispatched_loops_give_the_baseline_bits() {
    use purestate::kernels::simd;
    let best = dispatched_work();
    simd::force_baseline(true);
    assert_eq!(simd::level(), simd::Level::Baseline);
    let baseline = dispatched_work();
    simd::force_baseline(false);
    assert_eq!(simd::level(), simd::detected());
    for (i, (a, b)) in best.iter().zip(&baseline).enumerate() {
        assert!(a.bit_eq(b), "result {i} differs between the {:?} and the baseline loops", simd::detected());
    }
}
