//! The layer-library ops (take, one_hot, concatenate/stack/split/slice, the activations,
//! var/std/moments/logsumexp): gradients against central differences in float64, bits at 1, 2 and 7 threads,
//! the embedding lookup's scatter-add against a plain loop, and every error case. Values against JAX are in
//! `jax_ops_misc.rs`.

use purestate::grad::ValueAndGrad;
use purestate::kernels::THRESHOLD;
use purestate::ops::{concatenate, one_hot, stack, Axes, Split};
use purestate::{DType, Error, Result, StateStore, Tensor};

use super::fd::{self, tensor};

type Op = Box<dyn Fn(&[Tensor]) -> Result<Vec<Tensor>> + Send + Sync>;

/// The tape's gradient of the weighted outputs against central differences, input by input.
fn check(name: &str, f: Op, inputs: &[Tensor]) {
    fd::check(name, &*f, inputs)
}

/// An op of one output.
fn op(f: impl Fn(&[Tensor]) -> Result<Tensor> + Send + Sync + 'static) -> Op {
    multi(move |x| Ok(vec![f(x)?]))
}

/// An op of several outputs.
fn multi(f: impl Fn(&[Tensor]) -> Result<Vec<Tensor>> + Send + Sync + 'static) -> Op {
    Box::new(f)
}

#[test]
fn take_and_joins_match_finite_differences() {
    let repeated = Tensor::from([[0i32, 3, 3], [-1, 0, 3]]);
    check("take axis 0, repeated", op(move |x| x[0].take(&repeated, Some(0))), &[tensor(1, &[4, 3], -2.0, 2.0)]);
    let idx = Tensor::from([2i64, -3, 2]);
    check("take axis 1", op(move |x| x[0].take(&idx, Some(1))), &[tensor(2, &[2, 3, 2], -2.0, 2.0)]);
    let flat = Tensor::from([5u8, 0, 5, 1]);
    check("take flattened", op(move |x| x[0].take(&flat, None)), &[tensor(3, &[2, 3], -2.0, 2.0)]);
    let three = [tensor(4, &[2, 1, 2], -2.0, 2.0), tensor(5, &[2, 3, 2], -2.0, 2.0), tensor(6, &[2, 2, 2], -2.0, 2.0)];
    check("concatenate", op(|x| concatenate(&[&x[0], &x[1], &x[2]], 1)), &three);
    let pair = [tensor(7, &[3, 2], -2.0, 2.0), tensor(8, &[3, 2], -2.0, 2.0)];
    check("stack", op(|x| stack(&[&x[0], &x[1]], 1)), &pair);
    check("split sections", multi(|x| x[0].split(3, 1)), &[tensor(9, &[2, 6], -2.0, 2.0)]);
    check("split indices", multi(|x| x[0].split([1, -2], 0)), &[tensor(10, &[5, 2], -2.0, 2.0)]);
    check("slice", op(|x| x[0].slice(&[1, 0, 2], &[2, -1, 2])), &[tensor(11, &[4, 3, 5], -2.0, 2.0)]);
    // A tensor used twice: its two parts' cotangents are summed by the sweep.
    check(
        "split then concatenate",
        op(|x| {
            let p = x[0].split(2, 0)?;
            concatenate(&[&p[1], &p[0], &p[1]], 0)
        }),
        &[tensor(12, &[4, 3], -2.0, 2.0)],
    );
}

#[test]
fn activations_match_finite_differences() {
    let cases: Vec<(&str, Op, f64, f64)> = vec![
        ("erf", op(|x| x[0].erf()), -3.0, 3.0),
        ("erf tail", op(|x| x[0].erf()), 2.5, 5.0),
        ("gelu approximate", op(|x| x[0].gelu(true)), -4.0, 4.0),
        ("gelu exact", op(|x| x[0].gelu(false)), -4.0, 4.0),
        ("gelu exact tail", op(|x| x[0].gelu(false)), -9.0, -5.0),
        ("silu", op(|x| x[0].silu()), -6.0, 6.0),
        ("softplus", op(|x| x[0].softplus()), -20.0, 20.0),
        ("log_sigmoid", op(|x| x[0].log_sigmoid()), -20.0, 20.0),
        ("leaky_relu positive", op(|x| x[0].leaky_relu(0.2)), 0.01, 3.0),
        ("leaky_relu negative", op(|x| x[0].leaky_relu(0.2)), -3.0, -0.01),
        ("elu positive", op(|x| x[0].elu(1.5)), 0.01, 3.0),
        ("elu negative", op(|x| x[0].elu(1.5)), -3.0, -0.01),
        ("rsqrt", op(|x| x[0].rsqrt()), 0.1, 4.0),
        ("relu6 inside", op(|x| x[0].relu6()), 0.01, 5.99),
        ("relu6 below", op(|x| x[0].relu6()), -3.0, -0.01),
        ("relu6 above", op(|x| x[0].relu6()), 6.01, 9.0),
    ];
    for (seed, (name, f, lo, hi)) in cases.into_iter().enumerate() {
        check(name, f, &[tensor(20 + seed as u64, &[3, 4], lo, hi)]);
    }
}

#[test]
fn statistics_match_finite_differences() {
    let x = tensor(40, &[3, 4, 5], -2.0, 2.0);
    for (axes, keepdims) in [(Axes::All, false), (Axes::from(0), false), (Axes::from([-1, 0]), true)] {
        let a = axes.clone();
        check("var", op(move |x| x[0].var(a.clone(), keepdims)), std::slice::from_ref(&x));
        let a = axes.clone();
        check("std", op(move |x| x[0].std(a.clone(), keepdims)), std::slice::from_ref(&x));
        let a = axes.clone();
        check(
            "moments",
            multi(move |x| x[0].moments(a.clone(), keepdims).map(|(m, v)| vec![m, v])),
            std::slice::from_ref(&x),
        );
        let a = axes.clone();
        check("logsumexp", op(move |x| x[0].logsumexp(a.clone(), keepdims)), std::slice::from_ref(&x));
    }
    let big = tensor(41, &[2, 6], 700.0, 720.0);
    check("logsumexp of large values", op(|x| x[0].logsumexp(1, false)), &[big]);
}

/// `f` run under pools of 1, 2 and 7 threads: every tensor it returns has the same bits each time.
fn same_bits_at_any_thread_count(name: &str, f: impl Fn() -> Vec<Tensor> + Sync) {
    let run = |n: usize| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(&f);
    let one = run(1);
    for n in [2, 7] {
        for (k, (a, b)) in run(n).iter().zip(&one).enumerate() {
            assert!(a.bit_eq(b), "{name}: result {k} differs at {n} threads");
        }
    }
}

/// The value of `weighted(f)` and its gradients, in float32.
fn value_and_grads(f: &Op, inputs: &[Tensor]) -> Vec<Tensor> {
    let out = ValueAndGrad::new()
        .call(StateStore::new(), |scope| {
            let x: Vec<Tensor> = inputs.iter().map(|t| scope.watch(t)).collect::<Result<_>>()?;
            let mut loss = Tensor::scalar(0.0f32);
            for (k, y) in f(&x)?.iter().enumerate() {
                let w = tensor(7 + k as u64, y.dims(), -1.0, 1.0).cast(y.dtype());
                loss = loss.add(&y.mul(&w)?.sum(Axes::All, false)?)?;
            }
            Ok(loss)
        })
        .unwrap();
    std::iter::once(out.loss).chain(out.inputs).collect()
}

#[test]
fn results_and_gradients_are_bit_identical_at_1_2_and_7_threads() {
    let n = THRESHOLD + 4099;
    let x = tensor(50, &[n], -8.0, 8.0).cast(DType::Float32);
    let activations: Vec<(&str, Op)> = vec![
        ("erf", op(|x| x[0].erf())),
        ("gelu", op(|x| x[0].gelu(true))),
        ("gelu exact", op(|x| x[0].gelu(false))),
        ("silu", op(|x| x[0].silu())),
        ("softplus", op(|x| x[0].softplus())),
        ("leaky_relu", op(|x| x[0].leaky_relu(0.2))),
        ("elu", op(|x| x[0].elu(1.0))),
        ("rsqrt", op(|x| x[0].abs()?.rsqrt())),
        ("relu6", op(|x| x[0].relu6())),
        ("log_sigmoid", op(|x| x[0].log_sigmoid())),
    ];
    for (name, f) in &activations {
        same_bits_at_any_thread_count(name, || value_and_grads(f, std::slice::from_ref(&x)));
    }
    // An embedding lookup: 4096 tokens of a 3000-row table, a few rows picked hundreds of times.
    let table = tensor(51, &[3000, 128], -1.0, 1.0).cast(DType::Float32);
    let tokens = Tensor::from((0..4096).map(|i| if i % 3 == 0 { 7 } else { (i * i) % 3000 }).collect::<Vec<i32>>())
        .reshape(&[64, 64])
        .unwrap();
    let lookup = op(move |x| x[0].take(&tokens, Some(0)));
    same_bits_at_any_thread_count("take", || value_and_grads(&lookup, std::slice::from_ref(&table)));
    let m = tensor(52, &[600, 700], -3.0, 3.0).cast(DType::Float32);
    let stats: Vec<(&str, Op)> = vec![
        ("var", op(|x| x[0].var(0, false))),
        ("std", op(|x| x[0].std(Axes::All, false))),
        ("moments", multi(|x| x[0].moments([1], true).map(|(a, b)| vec![a, b]))),
        ("logsumexp", op(|x| x[0].logsumexp(1, false))),
        ("concatenate", op(|x| concatenate(&[&x[0], &x[0].exp()?], 1))),
        ("split", multi(|x| x[0].split([100, 250], 0))),
    ];
    for (name, f) in &stats {
        same_bits_at_any_thread_count(name, || value_and_grads(f, std::slice::from_ref(&m)));
    }
}

#[test]
fn take_gradient_is_the_plain_scatter_add_loop() {
    // Bits equal to `for s in sources { grad[dest[s]] += g[s] }` in source order, from zeros.
    let (rows, cols) = (50, 16);
    let table = Tensor::zeros([rows, cols], DType::Float32);
    let idx: Vec<i32> = (0..3000).map(|i| ((i * 37) % 11) * 4 - if i % 5 == 0 { rows as i32 } else { 0 }).collect();
    let g = tensor(60, &[idx.len(), cols], -1.0, 1.0).cast(DType::Float32);
    let gv = g.to_vec::<f32>().unwrap();
    let mut want = vec![0.0f32; rows * cols];
    for (s, &i) in idx.iter().enumerate() {
        let d = if i < 0 { i + rows as i32 } else { i } as usize;
        for c in 0..cols {
            want[d * cols + c] += gv[s * cols + c];
        }
    }
    let indices = Tensor::from(idx);
    let out = ValueAndGrad::new()
        .call(StateStore::new(), |scope| {
            let t = scope.watch(&table)?;
            t.take(&indices, Some(0))?.mul(&g)?.sum(Axes::All, false)
        })
        .unwrap();
    let got = out.inputs[0].to_vec::<f32>().unwrap();
    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
    // float16 tables get a float16 gradient (accumulated in float32, rounded once).
    let half_table = table.cast(DType::Float16);
    let out = ValueAndGrad::new()
        .call(StateStore::new(), |scope| {
            let t = scope.watch(&half_table)?;
            t.take(&indices, Some(0))?.cast(DType::Float32).mul(&g)?.sum(Axes::All, false)
        })
        .unwrap();
    // The cotangent reaching `take` is float16 (the cast's backward rounds it); sums are float32.
    let g16: Vec<f32> = gv.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
    let mut want16 = vec![0.0f32; rows * cols];
    for (s, &i) in indices.to_vec::<i32>().unwrap().iter().enumerate() {
        let d = if i < 0 { i + rows as i32 } else { i } as usize;
        for c in 0..cols {
            want16[d * cols + c] += g16[s * cols + c];
        }
    }
    assert_eq!(out.inputs[0].dtype(), DType::Float16);
    let rounded: Vec<f32> = want16.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
    assert_eq!(out.inputs[0].cast(DType::Float32).to_vec::<f32>().unwrap(), rounded);
}

#[test]
fn one_hot_gives_zero_rows_out_of_range_as_keras() {
    let y = one_hot(&Tensor::from([1i32, -1, 3, 0]), 3, -1, DType::Float32).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    let big =
        one_hot(&Tensor::from((0..40_000).map(|i| i % 11).collect::<Vec<i64>>()), 11, 0, DType::Bfloat16).unwrap();
    assert_eq!((big.dims(), big.dtype()), (&[11usize, 40_000][..], DType::Bfloat16));
    let per_class = big.cast(DType::Float32).sum(1, false).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(per_class, (0..11).map(|c| if c < 40_000 % 11 { 3637.0 } else { 3636.0 }).collect::<Vec<f32>>());
}

#[test]
fn bad_arguments_are_errors_naming_the_shapes() {
    let x = Tensor::zeros([4, 3], DType::Float32);
    let err = x.take(&Tensor::from([1i32, 4]), Some(0)).unwrap_err();
    assert!(matches!(err, Error::IndexOutOfRange { op: "take", index: 4, axis: 0, size: 4 }), "{err}");
    let err = x.take(&Tensor::from([-4i32]), Some(-1)).unwrap_err();
    assert!(matches!(err, Error::IndexOutOfRange { index: -4, axis: 1, size: 3, .. }), "{err}");
    assert!(matches!(x.take(&Tensor::from([0i32]), Some(-3)), Err(Error::InvalidShape { op: "take", .. })));

    let err = concatenate(&[&x, &Tensor::zeros([4, 2, 1], DType::Float32)], 1).unwrap_err();
    assert_eq!(err.to_string(), "`concatenate`: shape mismatch, expected (4, 3), got (4, 2, 1)");
    let err = concatenate(&[&x, &Tensor::zeros([5, 2], DType::Float32)], 1).unwrap_err();
    assert_eq!(err.to_string(), "`concatenate`: shape mismatch, expected (4, 2), got (5, 2)");
    assert!(matches!(concatenate(&[&x], -3), Err(Error::InvalidShape { op: "concatenate", .. })));
    let err = stack(&[&x, &x.transpose()], 0).unwrap_err();
    assert_eq!(err.to_string(), "`stack`: shape mismatch, expected (4, 3), got (3, 4)");
    assert!(matches!(stack(&[&x], 3), Err(Error::InvalidShape { op: "stack", .. })));

    let err = x.split(Split::Sections(3), 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "split: invalid argument `indices_or_sections`: 3 sections do not divide axis 0 of length 4 in shape (4, 3)"
    );
    assert!(matches!(x.split(0, 1), Err(Error::InvalidArgument { op: "split", .. })));
    assert!(matches!(x.split(2, 2), Err(Error::InvalidShape { op: "split", .. })));

    let err = x.slice(&[3, 1], &[2, 1]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "slice: invalid shape (4, 3): start [3, 1] and shape [2, 1] reach past axis 0 of length 4"
    );
    assert!(matches!(x.slice(&[0, 0, 0], &[1, 1, 1]), Err(Error::InvalidArgument { op: "slice", .. })));
    assert!(matches!(x.slice(&[0, 0], &[1, -2]), Err(Error::InvalidArgument { arg: "shape", .. })));

    assert!(matches!(x.var(2, false), Err(Error::InvalidShape { op: "var", .. })));
    assert!(matches!(x.std([0, -2], false), Err(Error::InvalidArgument { op: "std", .. })));
    assert!(matches!(x.moments([5], false), Err(Error::InvalidShape { op: "moments", .. })));
    assert!(matches!(x.logsumexp(-3, false), Err(Error::InvalidShape { op: "logsumexp", .. })));
    assert!(matches!(one_hot(&Tensor::from([0.5f32]), 2, -1, DType::Float32), Err(Error::UnsupportedDType { .. })));
    assert!(matches!(
        one_hot(&Tensor::from([0i32]), 2, -3, DType::Float32),
        Err(Error::InvalidShape { op: "one_hot", .. })
    ));
}
