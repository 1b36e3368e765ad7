//! Convolution and pooling: gradients against central differences in float64, JAX's max-pool tie and NaN rule,
//! bit-identity at 1, 2 and 7 threads on sizes above the parallel thresholds, 16-bit floats, and every error.
//! (Forward values and VJPs against JAX itself are in `jax_ops_conv.rs`.)

use purestate::grad::ValueAndGrad;
use purestate::ops::{avg_pool2d, conv2d, max_pool2d, Axes, Conv2d, Padding, Pool2d};
use purestate::{DType, Error, Result, StateStore, Tensor};

use super::fd::{self, tensor};

/// An op of one output.
type Op = dyn Fn(&[Tensor]) -> Result<Tensor>;

/// `f` as an op of several outputs, for the shared harness.
fn one(f: &Op) -> impl Fn(&[Tensor]) -> Result<Vec<Tensor>> + '_ {
    move |t| Ok(vec![f(t)?])
}

/// The loss and the gradient of the weighted output with respect to every input, from the tape.
fn tape_grads(f: &Op, inputs: &[Tensor]) -> (Tensor, Vec<Tensor>) {
    fd::tape_grads(&one(f), inputs)
}

/// The tape's gradients against central differences, every element of every input.
fn check(what: &str, f: &Op, inputs: &[Tensor]) {
    fd::check(what, &one(f), inputs)
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    let cases = [
        ([2, 5, 6, 3], [3, 2, 3, 4], Conv2d::default()),
        ([2, 5, 6, 3], [3, 3, 3, 2], Conv2d::default().padding(Padding::Same)),
        ([1, 7, 6, 2], [3, 3, 2, 3], Conv2d::default().strides([2, 3]).padding(Padding::Same)),
        ([1, 7, 7, 2], [2, 3, 2, 2], Conv2d::default().strides([2, 2])),
        ([2, 6, 7, 2], [2, 2, 2, 3], Conv2d::default().dilation([2, 3]).padding(Padding::Same)),
        ([1, 7, 6, 2], [3, 2, 2, 2], Conv2d::default().dilation([2, 2])),
        ([2, 4, 3, 3], [1, 1, 3, 2], Conv2d::default()),
        ([1, 5, 5, 2], [1, 1, 2, 2], Conv2d::default().strides([2, 2]).padding(Padding::Same)),
    ];
    for (i, (xd, kd, opts)) in cases.into_iter().enumerate() {
        let (x, k) = (tensor(i as u64 + 1, &xd, -1.0, 1.0), tensor(i as u64 + 50, &kd, -1.0, 1.0));
        check(&format!("{opts:?}"), &move |t: &[Tensor]| conv2d(&t[0], &t[1], opts), &[x, k]);
    }
}

#[test]
fn pool_gradients_match_finite_differences() {
    let cases = [
        ([2, 6, 6, 2], Pool2d::new([2, 2])),
        ([1, 6, 5, 3], Pool2d::new([3, 3]).strides([1, 1]).padding(Padding::Same)),
        ([2, 7, 7, 2], Pool2d::new([3, 3]).strides([2, 2]).padding(Padding::Same)),
        ([1, 5, 6, 2], Pool2d::new([2, 3]).strides([1, 2])),
    ];
    for (i, (xd, opts)) in cases.into_iter().enumerate() {
        // Distinct values at least 1e-3 apart: no window has two maxima within the difference step.
        let n: usize = xd.iter().product();
        let perm: Vec<f64> = (0..n).map(|j| ((j * 7919 + i * 13) % n) as f64 * 1e-3 - 0.1).collect();
        let x = Tensor::from_shape_vec(xd, perm).unwrap();
        check(&format!("max {opts:?}"), &move |t: &[Tensor]| max_pool2d(&t[0], opts), &[x]);
        let x = tensor(i as u64 + 7, &xd, -1.0, 1.0);
        check(&format!("avg {opts:?}"), &move |t: &[Tensor]| avg_pool2d(&t[0], opts), &[x]);
    }
}

/// The gradient of `sum(max_pool2d(x))` for `values` as one image of `rows` rows and one channel.
fn max_pool_grad(values: &[f32], opts: Pool2d, rows: usize) -> Vec<f32> {
    let x = Tensor::from_shape_vec([1, rows, values.len() / rows, 1], values.to_vec()).unwrap();
    let out = ValueAndGrad::new()
        .call(StateStore::new(), |s| max_pool2d(&s.watch(&x)?, opts)?.sum(Axes::All, false))
        .unwrap();
    out.inputs[0].to_vec::<f32>().unwrap()
}

/// Expected values printed by `jax.grad(lambda x: jnp.sum(keras.ops.max_pool(x, ...)))` (JAX 0.10.2, Keras
/// 3.15.1, CPU): `select_and_scatter_add` with `ge` keeps the current choice while `current >= candidate`.
#[test]
fn max_pool_gradient_picks_as_jax_select_and_scatter_with_ge() {
    let nan = f32::NAN;
    let row = |v: &[f32]| max_pool_grad(v, Pool2d::new([1, v.len()]), 1);
    assert_eq!(row(&[1.0, nan, 3.0, 3.0]), [0.0, 0.0, 1.0, 0.0], "NaN is taken, then left; the first 3 wins");
    assert_eq!(row(&[1.0, 3.0, nan, 2.0]), [0.0, 0.0, 0.0, 1.0]);
    assert_eq!(row(&[nan, 3.0, 1.0, 2.0]), [0.0, 1.0, 0.0, 0.0]);
    assert_eq!(row(&[1.0, 3.0, 2.0, nan]), [0.0, 0.0, 0.0, 1.0]);
    assert_eq!(row(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), [1.0, 0.0]);
    let same = Pool2d::new([1, 3]).strides([1, 1]).padding(Padding::Same);
    assert_eq!(max_pool_grad(&[5.0, f32::NEG_INFINITY, 2.0], same, 1), [2.0, 0.0, 1.0], "padding is never chosen");
    let overlapping = Pool2d::new([2, 2]).strides([1, 1]);
    let grid = [1.0, 2.0, 2.0, 2.0, 2.0, 1.0, 0.0, 2.0, 2.0];
    assert_eq!(max_pool_grad(&grid, overlapping, 3), [0.0, 2.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    let z =
        max_pool2d(&Tensor::from_shape_vec([1, 1, 4, 1], vec![1.0f32, nan, 3.0, 3.0]).unwrap(), Pool2d::new([1, 4]));
    assert!(z.unwrap().to_vec::<f32>().unwrap()[0].is_nan(), "the forward maximum is NaN (lax.max)");
}

/// A conv layer, both pools on its output, and a weighted loss: forward values and gradients of input and
/// kernel at one thread.
fn cnn_step(x: &Tensor, k: &Tensor) -> (Tensor, Tensor, Vec<Tensor>) {
    let forward = |t: &[Tensor]| -> Result<Tensor> {
        let z = conv2d(&t[0], &t[1], Conv2d::default().padding(Padding::Same))?.relu()?;
        let m = max_pool2d(&z, Pool2d::new([2, 2]))?;
        let a = avg_pool2d(&z, Pool2d::new([3, 3]).strides([1, 1]).padding(Padding::Same))?;
        let w = tensor(5, m.dims(), -1.0, 1.0).cast(DType::Float32);
        m.mul(&w)?.sum(Axes::All, false)?.add(&a.square()?.mean(Axes::All, false)?)
    };
    let z = conv2d(x, k, Conv2d::default().padding(Padding::Same)).unwrap();
    let (loss, grads) = tape_grads(&forward, &[x.clone(), k.clone()]);
    (z, loss, grads)
}

#[test]
fn conv_and_pools_are_bit_identical_at_1_2_and_7_threads() {
    // 64 images 8x8x32 and a 3x3x32x64 kernel: the patches (1.2 M elements), the products (75 M multiply-adds)
    // and the pools (64*8*8*64 outputs) are all above the parallel thresholds.
    let x = tensor(1, &[64, 8, 8, 32], -1.0, 1.0).cast(DType::Float32);
    let k = tensor(2, &[3, 3, 32, 64], -0.1, 0.1).cast(DType::Float32);
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    let (z1, l1, g1) = pool(1).install(|| cnn_step(&x, &k));
    assert!(g1.iter().all(|g| g.is_all_finite() && g.to_f64_vec().iter().any(|&v| v != 0.0)));
    for n in [2, 7] {
        let (z, l, g) = pool(n).install(|| cnn_step(&x, &k));
        assert!(z.bit_eq(&z1), "forward at {n} threads");
        assert!(l.bit_eq(&l1), "loss at {n} threads");
        assert!(g[0].bit_eq(&g1[0]) && g[1].bit_eq(&g1[1]), "gradients at {n} threads");
    }
}

#[test]
fn each_gradient_is_the_same_whether_or_not_the_other_operand_is_watched() {
    // The forward keeps the patches only when the kernel is watched; neither gradient depends on it.
    let x = tensor(3, &[2, 6, 5, 3], -1.0, 1.0).cast(DType::Float32);
    let k = tensor(4, &[3, 3, 3, 4], -1.0, 1.0).cast(DType::Float32);
    let opts = Conv2d::default().strides([2, 1]).padding(Padding::Same);
    let f = move |t: &[Tensor]| conv2d(&t[0], &t[1], opts);
    let (_, both) = tape_grads(&f, &[x.clone(), k.clone()]);
    let kc = k.clone();
    let only_x = move |t: &[Tensor]| conv2d(&t[0], &kc, opts);
    let (_, gx) = tape_grads(&only_x, std::slice::from_ref(&x));
    assert!(gx[0].bit_eq(&both[0]));
    let xc = x.clone();
    let only_k = move |t: &[Tensor]| conv2d(&xc, &t[0], opts);
    let (_, gk) = tape_grads(&only_k, &[k]);
    assert!(gk[0].bit_eq(&both[1]));
}

#[test]
fn half_floats_compute_in_float32_and_round_once() {
    let x = tensor(8, &[2, 5, 5, 3], -2.0, 2.0);
    let k = tensor(9, &[3, 3, 3, 2], -1.0, 1.0);
    let opts = Conv2d::default().padding(Padding::Same);
    for dtype in [DType::Float16, DType::Bfloat16] {
        let (xh, kh) = (x.cast(dtype), k.cast(dtype));
        let want = conv2d(&xh.cast(DType::Float32), &kh.cast(DType::Float32), opts).unwrap().cast(dtype);
        let got = conv2d(&xh, &kh, opts).unwrap();
        assert_eq!(got.dtype(), dtype);
        assert!(got.bit_eq(&want), "{dtype} conv2d");
        let p = Pool2d::new([3, 3]).strides([2, 2]).padding(Padding::Same);
        let avg = avg_pool2d(&xh, p).unwrap();
        assert!(avg.bit_eq(&avg_pool2d(&xh.cast(DType::Float32), p).unwrap().cast(dtype)), "{dtype} avg_pool2d");
        assert_eq!(max_pool2d(&xh, p).unwrap().dtype(), dtype);
        let (_, grads) = tape_grads(&move |t: &[Tensor]| conv2d(&t[0], &t[1], opts), &[xh, kh]);
        assert_eq!((grads[0].dtype(), grads[1].dtype()), (dtype, dtype));
    }
    let mixed = conv2d(&x.cast(DType::Float32), &k, opts).unwrap();
    assert_eq!(mixed.dtype(), DType::Float64, "float32 with float64 promotes");
}

#[test]
fn bad_convolutions_are_errors_naming_the_op_and_shapes() {
    let x = Tensor::zeros([2, 5, 5, 3], DType::Float32);
    let k = Tensor::zeros([3, 3, 3, 4], DType::Float32);
    let d = Conv2d::default();
    let err = conv2d(&Tensor::zeros([5, 5, 3], DType::Float32), &k, d).unwrap_err();
    assert!(matches!(err, Error::InvalidShape { op: "conv2d", .. }));
    assert_eq!(
        err.to_string(),
        "conv2d: invalid shape (5, 5, 3): the input must be 4-D (batch, height, width, channels)"
    );
    let err = conv2d(&x, &Tensor::zeros([3, 3, 3], DType::Float32), d).unwrap_err();
    assert!(matches!(err, Error::InvalidShape { op: "conv2d", .. }), "{err}");
    let err = conv2d(&x, &Tensor::zeros([3, 3, 2, 4], DType::Float32), d).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv2d: invalid shape (3, 3, 2, 4): the kernel takes 2 input channels, the input (2, 5, 5, 3) has 3"
    );
    let err = conv2d(&x, &k, d.dilation([3, 1])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv2d: invalid shape (2, 5, 5, 3): the kernel (3, 3, 3, 4) dilated by [3, 1] spans 7x3, larger than the \
         input's 5x5 with padding valid"
    );
    assert_eq!(conv2d(&x, &k, d.dilation([3, 1]).padding(Padding::Same)).unwrap().dims(), &[2, 5, 5, 4]);
    let err = conv2d(&x, &Tensor::zeros([0, 3, 3, 4], DType::Float32), d).unwrap_err();
    assert!(matches!(err, Error::InvalidShape { op: "conv2d", .. }), "{err}");
    let err = conv2d(&x, &k, d.strides([1, 0])).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { op: "conv2d", arg: "strides", .. }));
    assert_eq!(err.to_string(), "conv2d: invalid argument `strides`: must be positive, got [1, 0]");
    let err = conv2d(&x, &k, d.dilation([0, 1])).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { op: "conv2d", arg: "dilation", .. }));
    let err = conv2d(&x.cast(DType::Int32), &k, d).unwrap_err();
    assert!(matches!(err, Error::UnsupportedDType { op: "conv2d", dtype: DType::Int32 }));
    assert_eq!(err.to_string(), "conv2d: unsupported dtype int32");
}

#[test]
fn bad_pools_are_errors_naming_the_op_and_shapes() {
    let x = Tensor::zeros([2, 5, 4, 3], DType::Float32);
    for (name, pool) in
        [("max_pool2d", max_pool2d as fn(&Tensor, Pool2d) -> Result<Tensor>), ("avg_pool2d", avg_pool2d)]
    {
        let err = pool(&Tensor::zeros([5, 4, 3], DType::Float32), Pool2d::new([2, 2])).unwrap_err();
        assert!(matches!(err, Error::InvalidShape { op, .. } if op == name));
        let err = pool(&x, Pool2d::new([2, 5])).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{name}: invalid shape (2, 5, 4, 3): the pool window 2x5 is larger than the input's 5x4 with padding valid")
        );
        assert_eq!(pool(&x, Pool2d::new([2, 5]).padding(Padding::Same)).unwrap().dims(), &[2, 3, 1, 3]);
        let err = pool(&x, Pool2d::new([0, 2])).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { op, arg: "pool_size", .. } if op == name));
        let err = pool(&x, Pool2d::new([2, 2]).strides([0, 0])).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { op, arg: "strides", .. } if op == name));
        let err = pool(&x.cast(DType::Uint8), Pool2d::new([2, 2])).unwrap_err();
        assert!(matches!(err, Error::UnsupportedDType { op, dtype: DType::Uint8 } if op == name));
    }
}

#[test]
fn empty_batches_give_empty_results_and_gradients() {
    let x = Tensor::zeros([0, 5, 5, 2], DType::Float32);
    let k = tensor(1, &[3, 3, 2, 4], -1.0, 1.0).cast(DType::Float32);
    let opts = Conv2d::default().padding(Padding::Same);
    assert_eq!(conv2d(&x, &k, opts).unwrap().dims(), &[0, 5, 5, 4]);
    let (_, g) = tape_grads(&move |t: &[Tensor]| conv2d(&t[0], &t[1], opts), &[x.clone(), k]);
    assert_eq!((g[0].dims(), g[1].to_vec::<f32>().unwrap()), (&[0, 5, 5, 2][..], vec![0.0; 72]));
    assert_eq!(max_pool2d(&x, Pool2d::new([2, 2])).unwrap().dims(), &[0, 2, 2, 2]);
}
